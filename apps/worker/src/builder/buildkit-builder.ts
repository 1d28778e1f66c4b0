import { randomBytes, randomUUID } from 'node:crypto';
import type Docker from 'dockerode';
import type { DockerEngine } from '../docker-engine.js';
import { BuildkitStalled, UserBuildError } from '../errors.js';
import { BUILDKIT_STALLED, BUILDKIT_STALLED_RETRY, BUILDKIT_TRACE_ID, BuildkitProgress } from './buildkit-progress.js';
import type { BuildOptions, ImageBuilder } from './image-builder.js';
import { baseImagesOf, withBases } from './dockerfile-bases.js';
import { replaceTarEntry } from './context-rewrite.js';
import { parseDockerfile } from './dockerfile-parse.js';
import { syntaxDirectives } from './dockerfile-frontends.js';
import { stepSpans } from './step-spans.js';
import { parseImageRef } from '@imgbuilder/common/image-ref';
import type { RegistryCredentials } from '@imgbuilder/common/registry-auth';

/**
 * The engine's BuildKit (`/build?version=2`): independent stages run at once, and every image carries inline cache
 * metadata, so a later build on any engine can reuse its layers through `cacheFrom`. Progress arrives as BuildKit
 * StatusResponse messages, which the log shows as `docker build --progress=plain` does.
 */
export class BuildkitBuilder implements ImageBuilder {
  readonly kind = 'buildkit';

  constructor(
    private readonly engine: DockerEngine,
    /** Runs a build again whose progress stream the engine's BuildKit stopped sending (see BUILDKIT_STALLED). */
    private readonly fallback?: ImageBuilder,
  ) {}

  async build(context: NodeJS.ReadableStream, opts: BuildOptions, write: (text: string) => void): Promise<string> {
    try {
      return await this.buildOnce(context, opts, write);
    } catch (err) {
      // Docker 20.10's BuildKit loses a fast step's progress now and then, even for a reader that keeps up (seen with
      // curl): the classic builder passes every line through, so the build is run again there when its Dockerfile
      // needs nothing only BuildKit has.
      if (!(err instanceof BuildkitStalled) || !this.fallback || !opts.contextAgain || opts.signal.aborted || needsBuildkit(opts.dockerfileText ?? '')) throw err;
      write(`\n[imgbuilder] ${BUILDKIT_STALLED_RETRY}\n`);
      return this.fallback.build(opts.contextAgain(), opts, write);
    }
  }

  private async buildOnce(context: NodeJS.ReadableStream, opts: BuildOptions, write: (text: string) => void): Promise<string> {
    const progress = new BuildkitProgress(stepSpans());
    const buildid = randomUUID();
    let id = '';
    let stream: NodeJS.ReadableStream;
    // Closing the request is not enough to stop a BuildKit solve in every engine version: cancel it by id too, so
    // nothing keeps running in the engine after a timeout or a limit.
    const cancel = () => void this.cancel(buildid);
    opts.signal.addEventListener('abort', cancel, { once: true });
    const pulled = await this.pullPrivateBases(opts, write);
    try {
      // The build names its private bases by the names only it knows.
      if (pulled.size) context = replaceTarEntry(context, opts.dockerfile, withBases(opts.dockerfileText ?? '', pulled));
      try {
        stream = await this.engine.docker.buildImage(context, {
          t: opts.tag,
          dockerfile: opts.dockerfile,
          registryconfig: opts.registryconfig,
          abortSignal: opts.signal,
          labels: this.engine.labels,
          // The engine's BuildKit ignores the build API's cgroup parent and memory/CPU options: the sandbox moves
          // the steps into the build's cgroup instead, finding them by the marker.
          buildargs: {
            BUILDKIT_INLINE_CACHE: '1',
            ...(opts.stepMarker ? { no_proxy: opts.stepMarker } : {}),
            ...(opts.cacheNamespace ? { BUILDKIT_CACHE_MOUNT_NS: opts.cacheNamespace } : {}),
          },
          ...(opts.cacheFrom?.length ? { cachefrom: JSON.stringify(opts.cacheFrom) } : {}),
          ...(opts.target ? { target: opts.target } : {}),
          ...(opts.noCache ? { nocache: true } : {}),
          buildid,
          version: '2',
        } as unknown as Docker.ImageBuildOptions);
      } catch (err) {
        throw this.engine.wrap(err);
      }
      const failed = await this.engine.follow(stream, (p) => {
        if (p.id === BUILDKIT_TRACE_ID) {
          const status = progress.trace(p.aux);
          if (status) write(progress.feed(status));
          else if (progress.stalled) throw new BuildkitStalled(BUILDKIT_STALLED);
        } else if (typeof p.aux === 'object' && p.aux.ID) id = p.aux.ID;
        else if (p.stream) write(p.stream);
      }).catch((err: unknown) => {
        if (progress.stalled) cancel();
        throw err;
      });
      const rest = progress.flush();
      if (rest) write(rest);
      if (failed) {
        const message = (failed.errorDetail?.message ?? failed.error ?? '').trim();
        const step = progress.failure;
        if (!step) write(`ERROR: ${message}\n`);
        throw new UserBuildError(step ? `step "${step.step}": ${step.error}` : message);
      }
      return id;
    } finally {
      opts.signal.removeEventListener('abort', cancel);
      for (const image of pulled.values()) await this.engine.untag(image);
    }
  }

  /**
   * The engine's BuildKit pulls with credentials from a client session only, never from the build request's
   * X-Registry-Config, and it prefers an image already in the engine. So each FROM image on a registry this build
   * holds credentials for is pulled first, by the engine's image API, with those credentials. A pull that fails is
   * left for BuildKit to report, as the step it fails.
   *
   * Another build on this engine, running now or later, must not find that image by its name without credentials of
   * its own: the pulled image is named at once by a random name only this build knows, its own name (and with it the
   * repository's digest reference) is dropped, and the build's FROM lines are rewritten to the random name. Returns
   * each image's random name by the name the Dockerfile uses.
   */
  private async pullPrivateBases(opts: BuildOptions, write: (text: string) => void): Promise<Map<string, string>> {
    const pulled = new Map<string, string>();
    for (const image of baseImagesOf(opts.dockerfileText ?? '')) {
      let ref;
      try {
        ref = parseImageRef(image);
      } catch {
        continue;
      }
      const key = ref.domain === 'docker.io' ? 'https://index.docker.io/v1/' : ref.domain;
      const c = opts.registryconfig[key];
      if (!c) continue;
      write(`pulling ${image} with this build's credentials for ${ref.domain}\n`);
      try {
        const id = await this.pullAsId(image, { username: c.username, password: c.password, auth: c.auth }, opts.signal);
        const name = `imgbuilder-private/${randomBytes(16).toString('hex')}`;
        await this.engine.tag(id, name, 'base');
        pulled.set(image, `${name}:base`);
      } catch (err) {
        if (opts.signal.aborted) throw err;
        write(`${(err as Error).message}\n`);
      } finally {
        await this.engine.untag(image);
      }
    }
    return pulled;
  }

  /**
   * Pulls `image` and returns its id. Another build pulling the same name may drop it between the pull and the look
   * at it: then it is pulled again.
   */
  private async pullAsId(image: string, creds: RegistryCredentials, signal: AbortSignal): Promise<string> {
    for (let attempt = 1; ; attempt++) {
      await this.engine.pull(image, creds, signal, () => undefined);
      const info = (await this.engine.docker.getImage(image).inspect().catch(() => undefined)) as { Id?: string } | undefined;
      if (info?.Id) return info.Id;
      if (attempt === 3) throw new UserBuildError(`pull of ${image} succeeded but the image was gone from the engine before it could be used`);
    }
  }

  private async cancel(buildid: string): Promise<void> {
    await new Promise<void>((resolve) =>
      this.engine.docker.modem.dial({ path: '/build/cancel?', method: 'POST', options: { id: buildid }, statusCodes: { 200: true, 404: true } }, () => resolve()),
    );
  }
}

/** The flags the classic builder reads; any other (`--mount`, `--chmod`, `--link`, `--network`…) is BuildKit's alone. */
const CLASSIC_FLAGS = new Set(['from', 'chown', 'platform', 'interval', 'timeout', 'start-period', 'retries']);

/** Whether a Dockerfile needs BuildKit: a flag only it reads, a here-document, or a frontend of its own. */
function needsBuildkit(dockerfile: string): boolean {
  if (syntaxDirectives(dockerfile).length) return true;
  let parsed;
  try {
    parsed = parseDockerfile(dockerfile, { heredocs: true });
  } catch {
    return true;
  }
  return parsed.instructions.some((i) => i.heredocs.length > 0 || i.flags.some((f) => !CLASSIC_FLAGS.has(/^--([^=]*)/.exec(f)?.[1] ?? '')));
}
