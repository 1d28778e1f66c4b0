import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BuildRegistryAuth, BuildSource } from '@imgbuilder/proto';
import { sealBinding, type BuildJobData, type JobSecrets } from '@imgbuilder/common/build-job';
import type { BuildStore, LogStore } from '@imgbuilder/common/build-life';
import { formatDuration } from '@imgbuilder/common/duration';
import { BuildCancelled, ImageNotFound, RegistryAuthFailed, SecretsUnsealable, WorkspaceImageMissing } from '@imgbuilder/common/errors';
import { parseImageRef, repositoryOf } from '@imgbuilder/common/image-ref';
import type { Logger } from '@imgbuilder/common/logger';
import type { ObjectStore } from '@imgbuilder/common/object-store';
import { RegistryAuthPolicy, pushCredentials, secretsOf, type CredentialTable } from '@imgbuilder/common/registry-auth';
import type { RegistryClient } from '@imgbuilder/common/registry-client';
import type { SecretBox } from '@imgbuilder/common/secret-box';
import { retry } from '@imgbuilder/common/retry';
import { activeSpan, failSpan, inSpan } from '@imgbuilder/common/tracing';
import { BuildReporter } from './report/build-reporter.js';
import { endBuild, type EndingDeps } from './report/build-ending.js';
import { prepareContext } from './build-context.js';
import type { DockerEngine } from './docker-engine.js';
import { EngineUnavailableError, SourceError, withRegistryAuthHint } from './errors.js';
import { failureMessage, isKnownFailure } from './report/failure-message.js';
import { runInitializer } from './sources/index.js';
import type { WorkerMetrics } from './metrics.js';
import type { BuildSandbox } from './builder/build-sandbox.js';
import type { EgressGate } from './egress-check.js';
import type { ImageBuilder } from './builder/image-builder.js';
import type { BuildCache } from './builder/build-cache.js';
import { cacheNamespace, checkImageRegistry, rewriteDockerfile } from './builder/dockerfile-rewrite.js';
import { fetchAddSource } from './builder/dockerfile-add.js';

/** What builds run under, from the configuration (the variable and its default in brackets). */
export interface RunnerSettings {
  /** Where Dockerfile builds are pushed (IMGBUILDER_BASE_REPOSITORY). */
  baseRepository: string;
  /** Where workspace images are pushed (IMGBUILDER_WORKSPACE_REPOSITORY). */
  workspaceRepository: string;
  /** A build running longer is stopped and fails (IMGBUILDER_BUILD_TIMEOUT, 60m). */
  buildTimeoutMs: number;
  /** How long Redis may stay unreachable before the worker gives up (IMGBUILDER_REDIS_GIVE_UP, 60s). */
  redisGiveUpMs: number;
  /** How long finished builds stay in Redis (IMGBUILDER_LOG_RETENTION, 7d). */
  retentionMs: number;
  /** How long a finished build's event stream stays once its log object is complete (IMGBUILDER_LOG_STREAM_TTL, 5m). */
  streamTtlMs: number;
  /** A build's log is cut beyond this size (IMGBUILDER_LOG_MAX_BYTES, 64MiB). */
  maxLogBytes: number;
  /** How much of the end of a log Redis keeps (IMGBUILDER_LOG_REDIS_TAIL, 1MiB). */
  redisTailBytes: number;
  /** Larger build contexts fail (IMGBUILDER_MAX_CONTEXT_BYTES, 1GiB). */
  maxContextBytes: number;
  /** Build contexts with more files fail (IMGBUILDER_MAX_CONTEXT_FILES, 200000). */
  maxContextFiles: number;
  /** git remotes and downloads may use file:// URLs and local paths (IMGBUILDER_ALLOW_LOCAL_SOURCES, false). */
  allowLocalSources: boolean;
  /** Buckets (`bucket` or `bucket/prefix`) snapshots may come from besides the own one (IMGBUILDER_SNAPSHOT_SOURCES, none). */
  snapshotSources: string[];
  /** `# syntax=` frontends Dockerfiles may name (IMGBUILDER_ALLOWED_FRONTENDS, docker/dockerfile). */
  allowedFrontends: readonly string[];
}

export interface RunnerDeps {
  settings: RunnerSettings;
  store: BuildStore;
  objects: ObjectStore;
  logs: LogStore;
  registry: RegistryClient;
  engine: DockerEngine;
  builder: ImageBuilder;
  /** The registry-shared layer cache; absent with the classic builder, which cannot import it. */
  cache?: BuildCache;
  secrets: SecretBox;
  installation: CredentialTable;
  metrics: WorkerMetrics;
  log: Logger;
  /** Resource limits for build steps; absent only in tools that build without them. */
  sandbox?: BuildSandbox;
}

const ENGINE_ATTEMPTS = 3;
/** Past its own timeout a build gets this long to upload its log and end before the reaper ends it. */
export const END_GRACE_MS = 5 * 60_000;

/**
 * Runs one build job through its stages: fetch the source, build, push base, copy to workspace, verify. Every
 * outcome ends in exactly one terminal state in Redis, after the log object is complete.
 */
export class BuildRunner {
  private egress?: EgressGate;

  constructor(private readonly d: RunnerDeps) {}

  /** Build steps run only while this gate holds (absent: the egress check is turned off). */
  useEgressGate(gate: EgressGate | undefined): void {
    this.egress = gate;
  }

  get ending(): EndingDeps {
    const { settings, store, logs, metrics, log } = this.d;
    return { store, logs, metrics, log, retentionMs: settings.retentionMs, streamTtlMs: settings.streamTtlMs, maxLogBytes: settings.maxLogBytes, redisTailBytes: settings.redisTailBytes };
  }

  async run(job: BuildJobData, external: AbortSignal, attempt: { restarted: boolean }): Promise<void> {
    const { settings, store } = this.d;
    const log = this.d.log.child({ build_id: job.buildId, ref: job.ref });
    // The fencing token: a newer pick-up (this attempt frozen past its lock) or the end makes every write of ours a no-op.
    const token = await store.claim(job.buildId, Date.now() + settings.buildTimeoutMs + END_GRACE_MS);
    if (!token) {
      log.info('build already ended; nothing to do');
      return;
    }
    let sealed: JobSecrets = { additional: {}, git: [] };
    let sealRefused: string | undefined;
    try {
      sealed = this.d.secrets.open<JobSecrets>(job.sealed, sealBinding(job));
    } catch (err) {
      // Never run a build with credentials that are not its own; it still gets its ending, below.
      sealRefused = (err as Error).message;
      log.error({ err: sealRefused }, 'sealed credentials refused');
    }
    const auth = BuildRegistryAuth.fromJSON({ ...(job.auth as object), additional: sealed.additional });
    const policy = new RegistryAuthPolicy(auth, this.d.installation, { baseRepository: settings.baseRepository, workspaceRepository: settings.workspaceRepository });
    const allSecrets = [
      ...sealed.git.flatMap((g) => [g.password, g.ots]),
      ...Object.values(sealed.additional),
      ...[...policy.pullCredentials().values()].flatMap(secretsOf),
      ...[...this.d.installation.values()].flatMap(secretsOf),
    ].filter((s) => s && s.length >= 3);
    const lost = new AbortController();
    const refused = new AbortController();
    const reporter = new BuildReporter(
      {
        buildId: job.buildId,
        token,
        maxBytes: settings.maxLogBytes,
        redisTailBytes: settings.redisTailBytes,
        secrets: allSecrets,
        onBytes: (n) => this.d.metrics.logBytes.inc(n),
        onLost: (why) => lost.abort(why),
        onRedisRefused: (why) => refused.abort(why),
        redisGiveUpMs: settings.redisGiveUpMs / 2,
      },
      this.d.logs,
      log,
    );
    if (attempt.restarted || token > 1) {
      await reporter.resume();
      reporter.line('build restarted: the worker running it stopped (killed, unresponsive or shut down); building again from scratch');
    }
    const started = Date.now();
    const timeout = AbortSignal.timeout(settings.buildTimeoutMs);
    const signal = AbortSignal.any([timeout, external, lost.signal, refused.signal]);
    const workdir = await mkdtemp(join(tmpdir(), `imgbuilder-${job.buildId}-`));
    const cleanupTags: string[] = [];
    let outcome: { state: 'done_success' | 'done_failure'; message: string };
    // Another attempt or the reaper owns the build now: this one stops without a word more.
    const stopLost = async (): Promise<void> => {
      log.warn({ why: reporter.lost }, 'build lost by this attempt; stopped');
      await reporter.close();
    };
    try {
      reporter.line(`build ${job.buildId} of ${job.ref}${job.triggeredBy ? ` (triggered by ${job.triggeredBy}${job.tokenName ? `, token ${job.tokenName}` : ''})` : ''}`);
      signal.throwIfAborted();
      if (sealRefused) throw new SecretsUnsealable(sealRefused);
      for (const note of job.notes ?? []) reporter.line(note);
      await this.engineCall(() => this.d.engine.ping(), reporter, signal);
      await this.egress?.ensure();
      if (job.plan === 'copy') {
        await this.copy(job, policy, reporter, signal, cleanupTags);
      } else {
        await this.buildDockerfile(job, sealed, workdir, policy, reporter, signal, cleanupTags);
      }
      const exists = await this.d.registry.exists(parseImageRef(job.ref), { credentials: pushCredentials(this.d.installation, settings.workspaceRepository), retry: true });
      if (!exists) throw new WorkspaceImageMissing(job.ref);
      reporter.line(`done: ${job.ref}`);
      outcome = { state: 'done_success', message: '' };
    } catch (err) {
      if (lost.signal.aborted) return await stopLost();
      const cancelled = external.reason instanceof BuildCancelled && !timeout.aborted ? (external.reason as BuildCancelled) : undefined;
      if (external.aborted && !timeout.aborted && !cancelled) {
        // Shutdown: hand the job back; the next worker starts over. No terminal state. (A cancel, build-control.ts, ends it failed, saying who.)
        reporter.line('worker is shutting down; the build is handed to another worker');
        await reporter.close();
        throw err;
      }
      const redisFull = refused.signal.aborted ? `${String(refused.signal.reason)}; the build was stopped so Redis can free its memory` : undefined;
      const message = cancelled?.message ?? redisFull ?? (timeout.aborted ? `build timed out after ${formatDuration(settings.buildTimeoutMs)}` : failureMessage(err));
      if (!isKnownFailure(err) && !timeout.aborted && !cancelled) log.error({ err }, 'build failed unexpectedly');
      outcome = { state: 'done_failure', message };
      failSpan(activeSpan(), message);
    } finally {
      await rm(workdir, { recursive: true, force: true }).catch(() => undefined);
      for (const t of cleanupTags) await this.d.engine.untag(t);
    }
    if (lost.signal.aborted) return stopLost();
    await endBuild(this.ending, { buildId: job.buildId, ref: job.ref, state: outcome.state, message: outcome.message, token, startedMs: started }, reporter);
  }

  /** Retries engine calls that failed to connect, bounded; other failures pass through. */
  private engineCall<T>(fn: () => Promise<T>, reporter: BuildReporter, signal: AbortSignal): Promise<T> {
    return retry(fn, {
      attempts: ENGINE_ATTEMPTS,
      delayMs: (attempt) => 1000 * attempt,
      retriable: (err) => err instanceof EngineUnavailableError && !signal.aborted,
      onRetry: (err, attempt) => reporter.line(`${(err as Error).message}; retrying (${attempt}/${ENGINE_ATTEMPTS - 1})`),
    });
  }

  private async buildDockerfile(job: BuildJobData, sealed: JobSecrets, workdir: string, policy: RegistryAuthPolicy, reporter: BuildReporter, signal: AbortSignal, cleanup: string[]): Promise<void> {
    const { settings } = this.d;
    const source = BuildSource.fromJSON(job.source);
    if (source.from?.$case !== 'file' || !source.from.file.source) throw new SourceError('build source is missing');
    const file = source.from.file;
    const root = join(workdir, 'context');
    await mkdir(root);
    const limits = { maxBytes: settings.maxContextBytes, maxFiles: settings.maxContextFiles };
    await inSpan('source', () => runInitializer(file.source!, {
      root,
      gitSecrets: sealed.git,
      allowLocal: settings.allowLocalSources,
      objects: this.d.objects,
      signal,
      log: (l) => reporter.line(l),
      addSecrets: (s) => reporter.addSecrets(s),
      resolvedCommits: job.resolvedCommits ?? {},
      limits,
      downloadUrls: sealed.downloads,
      snapshotSources: settings.snapshotSources,
    }));
    const given = await inSpan('context packing', () => prepareContext(root, file.dockerfilePath, file.contextPath, limits));
    reporter.line(`build context: ${given.files} files, ${given.bytes} bytes; Dockerfile ${given.dockerfile}`);
    const cacheNs = cacheNamespace(job.triggeredBy);
    await mkdir(join(workdir, 'add'));
    const dockerfile = await rewriteDockerfile(given.dockerfileText, {
      frontends: settings.allowedFrontends,
      checkRegistry: checkImageRegistry,
      baseTriggers: (image) => this.baseTriggers(image, policy),
      fetch: (url, path, max) => fetchAddSource(url, path, max, signal),
      cacheNamespace: cacheNs,
      dir: join(workdir, 'add'),
      maxBytes: settings.maxContextBytes - given.bytes,
      log: (l) => reporter.line(l),
    });
    const ctx = dockerfile.changed ? given.withGenerated(dockerfile.text, dockerfile.files) : given;
    const registryconfig: Record<string, Record<string, string>> = {};
    for (const [host, c] of policy.pullCredentials()) {
      const key = host === 'docker.io' ? 'https://index.docker.io/v1/' : host;
      registryconfig[key] = { username: c.username ?? '', password: c.password ?? '', auth: c.auth ?? '' };
    }
    const cache = this.d.cache && (await inSpan('cache import', () => this.d.cache!.plan({ source: file.source!, dockerfilePath: file.dockerfilePath, contextPath: file.contextPath, dockerfileText: ctx.dockerfileText }, { caller: job.triggeredBy, fresh: job.noCache === true }, policy, (l) => reporter.line(l), signal, cleanup)));
    const base = parseImageRef(job.baseRef);
    const baseRepo = repositoryOf(base);
    const baseTag = base.tag ?? 'latest';
    void this.d.store.markStage(job.buildId, 'build').catch(() => undefined);
    let keptImages = new Map<string, string>();
    const imageId = await inSpan('build', () =>
      this.buildLimited(job.buildId, signal, async (limits, buildSignal, onStepContainer, stepMarker) => {
        const opts = { tag: job.baseRef, dockerfile: ctx.dockerfile, dockerfileText: ctx.dockerfileText, registryconfig, signal: buildSignal, limits, onStepContainer, stepMarker, cacheFrom: cache?.cacheFrom, cacheNamespace: cacheNs };
        const id = await this.engineCall(() => this.d.builder.build(ctx.tar(), { ...opts, noCache: job.noCache, contextAgain: () => ctx.tar() }, (t) => reporter.write(t)), reporter, signal).catch(withRegistryAuthHint);
        if (cache) keptImages = await this.d.cache!.buildKept(cache, job.buildId, (target, tag) => this.d.builder.build(ctx.tar(), { ...opts, cacheFrom: undefined, tag, target }, () => undefined), (l) => reporter.line(l), buildSignal, cleanup);
        return id;
      }),
    );
    void this.d.store.markStage(job.buildId, 'push').catch(() => undefined);
    // A cancel that lands between the build and the push pushes nothing.
    signal.throwIfAborted();
    reporter.line(`pushing ${job.baseRef}`);
    const pushBase = pushCredentials(this.d.installation, settings.baseRepository);
    await inSpan('push base', () => this.engineCall(() => this.d.engine.push(baseRepo, baseTag, pushBase, signal, (t) => reporter.write(t)), reporter, signal));
    // The cache refs' pushes (mostly manifests of layers just pushed) run beside the workspace push; they never fail the build.
    const cached = cache ? this.d.cache!.record(cache, imageId || job.baseRef, keptImages, signal, (l) => reporter.line(l), cleanup) : undefined;
    try {
      await this.pushWorkspace(job, imageId || job.baseRef, reporter, signal, cleanup);
    } finally {
      await cached?.catch(() => undefined);
    }
  }

  /**
   * A base image's ONBUILD triggers, from the image the engine will use: its own copy when it has one (both builders
   * prefer it), else the registry's, read with the build's own pull credentials. An image missing or denied is left
   * to the engine, which fails the build naming it; a registry that cannot be read fails it here.
   */
  private async baseTriggers(image: string, policy: RegistryAuthPolicy): Promise<string[]> {
    const local = await this.d.engine.docker.getImage(image).inspect().catch(() => undefined);
    if (local) return local.Config?.OnBuild ?? [];
    let ref;
    try {
      ref = parseImageRef(image);
    } catch {
      return [];
    }
    return this.d.registry.onbuildTriggers(ref, { credentials: policy.credentialsFor(ref.domain) }).catch((err: unknown) => {
      if (err instanceof ImageNotFound || err instanceof RegistryAuthFailed) return [];
      throw new SourceError(`FROM ${image}: its ONBUILD triggers cannot be checked: ${(err as Error).message}`);
    });
  }

  /**
   * Runs the engine build inside the build's sandbox. A build that crosses a limit fails naming it, whatever the
   * step's own exit status was, and what it wrote is removed.
   */
  private async buildLimited(
    buildId: string,
    signal: AbortSignal,
    build: (limits: object | undefined, signal: AbortSignal, onStepContainer: (id: string) => void, stepMarker?: string) => Promise<string>,
  ): Promise<string> {
    const run = await this.d.sandbox?.open(buildId);
    if (!run) return build(undefined, signal, () => undefined);
    let imageId: string | undefined;
    try {
      try {
        imageId = await build(run.buildOptions(), AbortSignal.any([signal, run.signal]), (id) => run.stepContainer(id), run.stepMarker);
      } catch (err) {
        throw (await run.verdict(err)) ?? err;
      }
      const breach = await run.verdict(undefined, imageId);
      if (breach) throw breach;
      return imageId;
    } finally {
      await run.release(imageId);
    }
  }

  private async copy(job: BuildJobData, policy: RegistryAuthPolicy, reporter: BuildReporter, signal: AbortSignal, cleanup: string[]): Promise<void> {
    const from = job.copyFrom ?? job.baseRef;
    const parsed = parseImageRef(from);
    reporter.line(`pulling ${from}`);
    await inSpan('pull', () => this.engineCall(() => this.d.engine.pull(from, policy.credentialsFor(parsed.domain), signal, (t) => reporter.write(t)), reporter, signal).catch(withRegistryAuthHint));
    cleanup.push(from);
    await this.pushWorkspace(job, from, reporter, signal, cleanup);
  }

  private async pushWorkspace(job: BuildJobData, image: string, reporter: BuildReporter, signal: AbortSignal, cleanup: string[]): Promise<void> {
    const ws = parseImageRef(job.ref);
    const repo = repositoryOf(ws);
    const tag = ws.tag ?? 'latest';
    signal.throwIfAborted();
    await this.d.engine.tag(image, repo, tag);
    cleanup.push(job.ref);
    void this.d.store.markStage(job.buildId, 'push').catch(() => undefined);
    reporter.line(`pushing ${job.ref}`);
    const creds = pushCredentials(this.d.installation, this.d.settings.workspaceRepository);
    await inSpan('push workspace', () => this.engineCall(() => this.d.engine.push(repo, tag, creds, signal, (t) => reporter.write(t)), reporter, signal));
  }
}
