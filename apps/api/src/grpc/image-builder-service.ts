import { StringDecoder } from 'node:string_decoder';
import type { Queue } from 'bullmq';
import { status as GrpcStatus, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData } from '@grpc/grpc-js';
import {
  BuildRegistryAuth,
  BuildSource,
  BuildStatus,
  GitAuthMethod,
  GitConfig,
  type GitInitializer,
  type BuildInfo,
  type LogInfo,
  type BuildRequest,
  type BuildResponse,
  type ImageBuilderServer,
  type ListBuildsRequest,
  type ListBuildsResponse,
  type LogsRequest,
  type LogsResponse,
  type ResolveBaseImageRequest,
  type ResolveBaseImageResponse,
  type ResolveWorkspaceImageRequest,
  type ResolveWorkspaceImageResponse,
} from '@imgbuilder/proto';
import { type BuildStore, isTerminal, type BuildRecord } from '@imgbuilder/common/build-store';
import type { LogStore } from '@imgbuilder/common/log-store';
import { callerOf, describeCaller, forEachDownload, sealBinding, type BuildJobData, type JobSecrets } from '@imgbuilder/common/build-job';
import type { FairShare } from '@imgbuilder/common/fair-share';
import { BuildNotFound, BuildStateUnavailable, CallerQueueFull, ImageNotFound, ImageRefInvalid, InvalidRequest, QueueFull, RegistryAuthFailed, SourceRefused } from '@imgbuilder/common/errors';
import { parseImageRef } from '@imgbuilder/common/image-ref';
import type { Logger } from '@imgbuilder/common/logger';
import type { RegistryClient } from '@imgbuilder/common/registry-client';
import { pushCredentials, type CredentialTable } from '@imgbuilder/common/registry-auth';
import type { SecretBox } from '@imgbuilder/common/secret-box';
import { RefCensor } from '@imgbuilder/common/censor';
import { splitUrlCredentials } from '@imgbuilder/common/git';
import { forEachGit } from '@imgbuilder/common/refs';
import type { ApiMetrics } from '../metrics.js';
import type { BuildPlan, BuildPlanner } from '../plan/build-plan.js';
import type { EventHub } from '../logs/event-hub.js';
import { toServiceError } from './grpc-status.js';
import { ImageExistence } from '../plan/image-existence.js';
import { readBuildLog, type BuildLogDeps } from '../logs/build-log.js';
import type { LogTokens } from '../logs/log-token.js';
import { LOG_TOKEN_HEADER, SUPERVISOR_API_PATH } from '../logs/supervisor-log-server.js';
import { encodeLogEvent } from './log-encoding.js';
import { callSignal, SlowClientError, writeMessage } from './stream-writer.js';
import { admittedCaller } from './auth.js';

/**
 * Largest job payload (source, auth, sealed secrets) put in Redis: a build request is small; bigger ones are refused
 * before anything is stored.
 */
const MAX_JOB_BYTES = 1024 * 1024;

/** A job before it has an id: the secrets are sealed per id, since the id is part of what they are bound to. */
interface JobContent {
  job: Omit<BuildJobData, 'buildId' | 'sealed'>;
  secrets: JobSecrets;
}

/** How long a "the workspace image exists" answer is reused (see ImageExistence). */
const EXISTS_CACHE_MS = 5_000;

export interface ServiceConfig {
  workspaceRepository: string;
  baseRepository: string;
  installation: CredentialTable;
  logUrlTtlMs: number;
  retentionMs: number;
  buildTimeoutMs: number;
  /** How long a build may wait in the queue; with the build timeout, its deadline (enforced by the reaper). */
  maxQueueWaitMs: number;
  maxQueued: number;
  /** Queued builds one caller may have (IMGBUILDER_MAX_QUEUED_PER_CALLER); 0: no limit. */
  maxQueuedPerCaller: number;
  /** Test only: exit between creating a build and queueing its job (IMGBUILDER_FAULT_EXIT_BEFORE_ENQUEUE). */
  faultExitBeforeEnqueue?: boolean;
  /** A stream client that reads nothing this long is dropped (RESOURCE_EXHAUSTED). */
  slowClientTimeoutMs: number;
  /** Interval of `running` keepalive messages on quiet Build streams. */
  keepaliveMs: number;
  /** IMGBUILDER_LOG_INFO=supervisor: log_info names the supervisor endpoint at this origin, with a per-build token. */
  supervisorLogs?: { publicUrl: string; tokens: LogTokens };
}

/** What the service works with, made once per process (main.ts). */
export interface ServiceDeps {
  planner: BuildPlanner;
  registry: RegistryClient;
  store: BuildStore;
  hub: EventHub;
  queue: Queue<BuildJobData>;
  /** Each caller's line in the queue (priorities). */
  fair: FairShare;
  logStore: LogStore;
  /** Seals the credentials a job carries. */
  secrets: SecretBox;
  metrics: ApiMetrics;
  log: Logger;
}

/** The `builder.ImageBuilder` rpcs. Holds no build state: everything lives in Redis. */
export class ImageBuilderService {
  private readonly planner: BuildPlanner;
  private readonly registry: RegistryClient;
  private readonly store: BuildStore;
  private readonly hub: EventHub;
  private readonly queue: Queue<BuildJobData>;
  private readonly fair: FairShare;
  private readonly logStore: LogStore;
  private readonly secrets: SecretBox;
  private readonly metrics: ApiMetrics;
  private readonly log: Logger;

  constructor(
    private readonly cfg: ServiceConfig,
    deps: ServiceDeps,
  ) {
    ({ planner: this.planner, registry: this.registry, store: this.store, hub: this.hub, queue: this.queue, fair: this.fair, logStore: this.logStore, secrets: this.secrets, metrics: this.metrics, log: this.log } = deps);
  }

  handlers(): ImageBuilderServer {
    return {
      resolveBaseImage: (call, cb) => this.unary('ResolveBaseImage', call, cb, (r) => this.resolveBaseImage(r)),
      resolveWorkspaceImage: (call, cb) => this.unary('ResolveWorkspaceImage', call, cb, (r) => this.resolveWorkspaceImage(r)),
      listBuilds: (call, cb) => this.unary('ListBuilds', call, cb, (r) => this.listBuilds(r)),
      build: (call) => void this.stream('Build', call, (signal) => this.build(call, signal)),
      logs: (call) => void this.stream('Logs', call, (signal) => this.logs(call, signal)),
    };
  }

  private unary<Req, Res>(method: string, call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>, fn: (req: Req) => Promise<Res>): void {
    const end = this.metrics.callStarted(method);
    fn(call.request).then(
      (res) => {
        end('OK');
        cb(null, res);
      },
      (err: unknown) => {
        const e = toServiceError(err, this.log, method);
        end(GrpcStatus[e.code]);
        cb(e);
      },
    );
  }

  private async stream<Req, Res>(method: string, call: ServerWritableStream<Req, Res>, fn: (signal: AbortSignal) => Promise<void>): Promise<void> {
    const end = this.metrics.callStarted(method);
    const { signal, done } = callSignal(call as ServerWritableStream<unknown, unknown>);
    try {
      await fn(signal);
      end('OK');
      if (!signal.aborted) call.end();
    } catch (err) {
      if (err instanceof SlowClientError) this.log.info({ method, err: err.message }, 'slow client dropped');
      const e = toServiceError(err, this.log, method);
      end(GrpcStatus[e.code]);
      if (!signal.aborted) call.emit('error', e);
    } finally {
      done();
    }
  }

  private write<T>(call: ServerWritableStream<unknown, T>, message: T, signal: AbortSignal): Promise<void> {
    return writeMessage(call, message, signal, this.cfg.slowClientTimeoutMs);
  }

  async resolveBaseImage(req: ResolveBaseImageRequest): Promise<ResolveBaseImageResponse> {
    const policy = this.planner.policyFor(req.auth);
    return { ref: await this.planner.resolveImage(req.ref, policy, req.useRetryClient) };
  }

  async resolveWorkspaceImage(req: ResolveWorkspaceImageRequest): Promise<ResolveWorkspaceImageResponse> {
    const plan = await this.planner.plan(req.source, req.auth, req.useRetryClient);
    if (await this.workspaceImageExists(plan.ref)) return { ref: plan.ref, baseRef: plan.baseRef, status: BuildStatus.done_success };
    const active = await this.store.activeIdForRef(plan.ref);
    const record = active ? await this.store.get(active) : undefined;
    const status = record && !isTerminal(record.state) ? BuildStatus.running : BuildStatus.unknown;
    return { ref: plan.ref, baseRef: plan.baseRef, status };
  }

  async listBuilds(_req: ListBuildsRequest): Promise<ListBuildsResponse> {
    const records = await this.store.listLive();
    return { builds: await Promise.all(records.map((r) => this.buildInfo(r))) };
  }

  private async build(call: ServerWritableStream<BuildRequest, BuildResponse>, signal: AbortSignal): Promise<void> {
    const req = call.request;
    const fromResolvedBase = Boolean(req.baseImageNameResolved && !req.forceRebuild);
    let plan: BuildPlan;
    if (fromResolvedBase) {
      // The fast path builds from the given base, not the source; a request without one is still malformed.
      if (!req.source?.from) throw new InvalidRequest('build source is missing');
      plan = await this.planner.planFromResolvedBase(req.baseImageNameResolved, this.planner.policyFor(req.auth)).catch((err: unknown) => this.planFromSourceInstead(req, err));
    } else {
      plan = await this.planner.plan(req.source, req.auth, req.useRetryClient);
    }
    let log = this.log.child({ ref: plan.ref, triggeredBy: req.triggeredBy || undefined });
    const answerIfBuilt = async (p: BuildPlan): Promise<boolean> => {
      if (req.forceRebuild || !(await this.workspaceImageExists(p.ref))) return false;
      log.debug('workspace image exists');
      await this.write(call, { ref: p.ref, baseRef: p.baseRef, status: BuildStatus.done_success, message: '', info: undefined }, signal);
      return true;
    };

    if (await answerIfBuilt(plan)) return;
    if (plan.kind === 'copy' && !plan.copyFrom) {
      // base_image_name_resolved names its image by tag or digest, and it may be gone since: pin it to a digest
      // that exists, or build from the source as Gitpod's builder does (its server's restart path relies on it).
      try {
        plan.copyFrom = await this.planner.resolveImage(plan.baseRef, plan.policy, req.useRetryClient);
      } catch (err) {
        plan = await this.planFromSourceInstead(req, err);
        log = this.log.child({ ref: plan.ref, triggeredBy: req.triggeredBy || undefined });
        if (await answerIfBuilt(plan)) return;
      }
    }
    if (plan.fallbackNote) log.info({ reason: plan.fallbackNote }, 'base_image_name_resolved unusable; building from the source');

    const buildId = await this.startOrJoin(plan, req, log);
    const record = await this.store.get(buildId);
    if (!record) throw new BuildStateUnavailable('the build record vanished; retry');
    const running = async (r: BuildRecord) =>
      this.write(call, { ref: r.ref, baseRef: r.baseRef, status: BuildStatus.running, message: '', info: await this.buildInfo(r, BuildStatus.running) }, signal);
    const terminal = async (r: BuildRecord, state: 'done_success' | 'done_failure', message: string) => {
      const st = state === 'done_success' ? BuildStatus.done_success : BuildStatus.done_failure;
      await this.write(call, { ref: r.ref, baseRef: r.baseRef, status: st, message, info: await this.buildInfo(r, st) }, signal);
    };
    if (isTerminal(record.state)) {
      await terminal(record, record.state as 'done_success' | 'done_failure', record.message);
      return;
    }
    await running(record);

    // Quiet builds still send `running` now and then, so proxies and clients see a live stream.
    const keepalive = setInterval(() => void running(record).catch(() => undefined), this.cfg.keepaliveMs);
    try {
      for await (const e of this.hub.events(buildId, signal)) {
        if (e.kind !== 'state') continue;
        if (e.state === 'done_success' || e.state === 'done_failure') {
          await terminal(record, e.state, e.message);
          return;
        }
      }
    } finally {
      clearInterval(keepalive);
    }
  }

  /**
   * base_image_name_resolved could not be used (`err`): plan the build from the request's source instead. A base
   * that is merely unreachable (registry down, rate-limited) is not "gone": that error stands, as it does when the
   * source itself cannot be planned. Gone means: its name does not parse or is refused, the image is not there, or
   * the registry will not let us read it.
   */
  private async planFromSourceInstead(req: BuildRequest, err: unknown): Promise<BuildPlan> {
    const gone = err instanceof ImageRefInvalid || err instanceof SourceRefused || err instanceof ImageNotFound || err instanceof RegistryAuthFailed;
    if (!gone) throw err;
    const plan = await this.planner.plan(req.source, req.auth, req.useRetryClient).catch((sourceErr: unknown) => {
      this.log.debug({ err: (sourceErr as Error).message }, 'the source cannot replace base_image_name_resolved');
      throw err;
    });
    // One line in the build log, whatever the caller put in the field.
    plan.fallbackNote = `base image ${req.baseImageNameResolved} (base_image_name_resolved) cannot be used: ${(err as Error).message}; building from the source instead`.replace(/[\r\n\t\0]+/g, ' ');
    return plan;
  }

  /** Joins the build queued or running for the ref, or queues a new one; returns its id. */
  private async startOrJoin(plan: BuildPlan, req: BuildRequest, log: Logger): Promise<string> {
    const content = this.jobContent(plan, req);
    const jobBytes = Buffer.byteLength(JSON.stringify(this.sealJob('00000000-0000-0000-0000-000000000000', content)));
    if (jobBytes > MAX_JOB_BYTES) {
      throw new InvalidRequest(`build request is too large: ${jobBytes} bytes of source, auth and secrets, more than the ${MAX_JOB_BYTES} bytes a queued build may carry; send less (large files belong in the build context)`);
    }
    const existing = await this.store.activeIdForRef(plan.ref);
    const caller = callerOf(content.job);
    if (!existing) {
      const queued = await this.queue.getJobCountByTypes('waiting', 'prioritized', 'delayed');
      if (queued >= this.cfg.maxQueued) {
        throw new QueueFull(queued, this.cfg.maxQueued, `build queue is full (${queued} builds waiting, limit IMGBUILDER_MAX_QUEUED_BUILDS=${this.cfg.maxQueued}); retry later`);
      }
      const mine = this.cfg.maxQueuedPerCaller ? (await this.fair.count(caller)).queued : 0;
      if (this.cfg.maxQueuedPerCaller && mine >= this.cfg.maxQueuedPerCaller) {
        const who = describeCaller(caller);
        throw new CallerQueueFull(caller, mine, this.cfg.maxQueuedPerCaller, `${who} has ${mine} builds waiting, the limit per caller (IMGBUILDER_MAX_QUEUED_PER_CALLER=${this.cfg.maxQueuedPerCaller}); retry once some have started`);
      }
    }
    const { created, id } = await this.store.createOrJoin({
      ref: plan.ref,
      baseRef: plan.baseRef,
      triggeredBy: req.triggeredBy,
      // Short until the job is safely queued: if this process dies in between, the lock frees itself.
      lockTtlMs: 60_000,
      retentionMs: this.cfg.retentionMs,
      // Room past the build timeout for the worker's own timeout handling and final log upload.
      deadlineAt: Date.now() + this.cfg.maxQueueWaitMs + this.cfg.buildTimeoutMs + 5 * 60_000,
    });
    if (!created) {
      this.metrics.deduplicated.inc();
      log.info({ build_id: id }, 'joined running build');
      return id;
    }
    if (this.cfg.faultExitBeforeEnqueue) {
      log.warn({ build_id: id }, 'fault point: exiting before queueing the build (IMGBUILDER_FAULT_EXIT_BEFORE_ENQUEUE)');
      process.exit(70);
    }
    try {
      // The log object exists from the first `running` message on, so its presigned URL never answers 404. Its
      // creation is bounded by the store's deadline and runs alongside queueing; a process dying in this window
      // leaves a build without a job, which the reaper ends.
      await Promise.all([
        this.logStore.create(id).catch((err: Error) => log.warn({ err: err.message, build_id: id }, 'could not create the log object yet')),
        // The build's place in its caller's line (fair-share.ts); a joined build keeps its creator's.
        this.fair.enqueue(id, caller).then((priority) => this.queue.add('build', this.sealJob(id, content), { jobId: id, priority })),
      ]);
      await this.store.extendLock(plan.ref, id, this.cfg.buildTimeoutMs * 2 + 600_000);
    } catch (err) {
      await this.store.finish({ buildId: id, ref: plan.ref, state: 'done_failure', message: 'build could not be queued', retentionMs: this.cfg.retentionMs, eventsTtlMs: this.cfg.retentionMs }).catch(() => undefined);
      throw err;
    }
    this.metrics.started.inc();
    log.info({ build_id: id, plan: plan.kind }, 'build queued');
    return id;
  }

  /** Everything of the job but its id and seal, with the credentials it must carry sealed. */
  private jobContent(plan: BuildPlan, req: BuildRequest): JobContent {
    const secrets: JobSecrets = { additional: { ...(req.auth?.additional ?? {}) }, git: [], downloads: [] };
    // Strip credentials out of the source (passwords, OTS URLs, user:password@ in URLs, custom_config, download
    // URLs); they travel sealed.
    const source = BuildSource.fromPartial(req.source ?? {});
    if (source.from?.$case === 'file') {
      forEachGit(source.from.file.source, (g) => secrets.git.push(sealGitSecrets(g)));
      forEachDownload(source.from.file.source, (f) => {
        secrets.downloads!.push(f.url);
        f.url = '';
      });
    }
    const auth = BuildRegistryAuth.fromPartial({ ...(req.auth ?? {}), additional: {} });
    const job = {
      ref: plan.ref,
      baseRef: plan.baseRef,
      source: BuildSource.toJSON(source),
      plan: plan.kind,
      copyFrom: plan.copyFrom,
      auth: BuildRegistryAuth.toJSON(auth),
      triggeredBy: req.triggeredBy,
      tokenName: admittedCaller(req)?.name,
      resolvedCommits: plan.resolvedCommits,
      notes: plan.fallbackNote ? [plan.fallbackNote] : undefined,
    };
    return { job, secrets };
  }

  /** The job for `buildId`: its secrets sealed to that id and the rest of the job (see sealBinding). */
  private sealJob(buildId: string, { job, secrets }: JobContent): BuildJobData {
    const data = { buildId, ...job };
    return { ...data, sealed: this.secrets.seal(secrets, sealBinding(data)) };
  }

  /** What every Logs call reads a log with, made on the first. */
  private logDeps?: BuildLogDeps;

  private async logs(call: ServerWritableStream<LogsRequest, LogsResponse>, signal: AbortSignal): Promise<void> {
    const req = call.request;
    let buildId = req.buildId;
    if (!buildId && req.buildRef) {
      try {
        parseImageRef(req.buildRef);
      } catch {
        throw new BuildNotFound();
      }
      buildId = (await this.store.latestIdForRef(req.buildRef)) ?? '';
    }
    if (!buildId) {
      if (!req.buildRef) throw new InvalidRequest('give build_id or build_ref');
      throw new BuildNotFound();
    }
    const record = await this.store.get(buildId);
    if (!record) throw new BuildNotFound(buildId);
    // Censoring holds back a ref's length of text so a ref split across chunks is still caught; flushed at the end.
    const censor = req.censored ? new RefCensor([record.ref, record.baseRef, this.cfg.baseRepository, this.cfg.workspaceRepository]) : undefined;
    const decoder = new StringDecoder('utf8');
    const send = async (data: Buffer) => {
      if (!censor) return this.write(call, { content: data }, signal);
      const text = censor.push(decoder.write(data));
      if (text) await this.write(call, { content: Buffer.from(text) }, signal);
    };
    const flush = async () => {
      const rest = censor ? censor.end() + decoder.end() : '';
      if (rest && !signal.aborted) await this.write(call, { content: Buffer.from(rest) }, signal);
    };
    for await (const piece of readBuildLog(record, (this.logDeps ??= { store: this.store, logStore: this.logStore, hub: this.hub }), signal)) {
      if (Buffer.isBuffer(piece)) await send(piece);
      else if (censor) await send(Buffer.from(piece.text));
      else await this.write(call, encodeLogEvent(piece) as unknown as LogsResponse, signal);
    }
    await flush();
  }

  private readonly existence = new ImageExistence(
    (ref) => this.registry.exists(parseImageRef(ref), { credentials: pushCredentials(this.cfg.installation, this.cfg.workspaceRepository) }),
    EXISTS_CACHE_MS,
  );

  private workspaceImageExists(ref: string): Promise<boolean> {
    return this.existence.exists(ref);
  }

  private async buildInfo(r: BuildRecord, status?: BuildStatus): Promise<BuildInfo> {
    const sup = this.cfg.supervisorLogs;
    const logInfo: LogInfo = sup
      ? { url: `${sup.publicUrl.replace(/\/$/, '')}${SUPERVISOR_API_PATH}`, headers: { [LOG_TOKEN_HEADER]: sup.tokens.issue(r.id) } }
      : { url: await this.logStore.presign(r.logKey, this.cfg.logUrlTtlMs).catch(() => ''), headers: {} };
    return {
      ref: r.ref,
      baseRef: r.baseRef,
      status: status ?? (r.state === 'done_success' ? BuildStatus.done_success : r.state === 'done_failure' ? BuildStatus.done_failure : BuildStatus.running),
      startedAt: String(r.startedAt),
      buildId: r.id,
      logInfo,
    };
  }
}

/** Moves a git initializer's secrets out of it (in place) and returns them for sealing. */
function sealGitSecrets(g: GitInitializer): JobSecrets['git'][number] {
  const config = g.config ?? GitConfig.fromPartial({});
  const inUrl = splitUrlCredentials(g.remoteUri);
  g.remoteUri = inUrl.url;
  if (g.upstreamRemoteUri) g.upstreamRemoteUri = splitUrlCredentials(g.upstreamRemoteUri).url;
  let password = config.authPassword;
  if (inUrl.credentials && config.authentication === GitAuthMethod.NO_AUTH) {
    // `https://user:token@host/repo` becomes BASIC_AUTH, so the bare URL is all the job and the checkout hold.
    config.authentication = GitAuthMethod.BASIC_AUTH;
    config.authUser = inUrl.credentials.username;
    password = inUrl.credentials.password;
  }
  const sealed = { password, ots: config.authOts, config: { ...config.customConfig } };
  config.authPassword = '';
  config.authOts = '';
  config.customConfig = {};
  g.config = config;
  return sealed;
}
