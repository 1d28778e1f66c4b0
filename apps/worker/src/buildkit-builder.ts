import { randomUUID } from 'node:crypto';
import type Docker from 'dockerode';
import { UserBuildError, type DockerEngine, type Progress } from './docker-engine.js';
import { BUILDKIT_TRACE_ID, BuildkitProgress } from './buildkit-progress.js';
import type { BuildOptions, ImageBuilder } from './image-builder.js';

/**
 * The engine's BuildKit (`/build?version=2`): independent stages run at once, and every image carries inline cache
 * metadata, so a later build on any engine can reuse its layers through `cacheFrom`. Progress arrives as BuildKit
 * StatusResponse messages, which the log shows as `docker build --progress=plain` does.
 */
export class BuildkitBuilder implements ImageBuilder {
  readonly kind = 'buildkit';

  constructor(private readonly engine: DockerEngine) {}

  async build(context: NodeJS.ReadableStream, opts: BuildOptions, write: (text: string) => void): Promise<string> {
    const progress = new BuildkitProgress();
    const buildid = randomUUID();
    let id = '';
    let stream: NodeJS.ReadableStream;
    // Closing the request is not enough to stop a BuildKit solve in every engine version: cancel it by id too, so
    // nothing keeps running in the engine after a timeout or a limit.
    const cancel = () => void this.cancel(buildid);
    opts.signal.addEventListener('abort', cancel, { once: true });
    try {
      try {
        stream = await this.engine.docker.buildImage(context, {
          t: opts.tag,
          dockerfile: opts.dockerfile,
          registryconfig: opts.registryconfig,
          abortSignal: opts.signal,
          labels: this.engine.labels,
          // The engine's BuildKit ignores the build API's cgroup parent and memory/CPU options: the sandbox moves
          // the steps into the build's cgroup instead, finding them by the marker.
          buildargs: { BUILDKIT_INLINE_CACHE: '1', ...(opts.stepMarker ? { no_proxy: opts.stepMarker } : {}) },
          ...(opts.cacheFrom?.length ? { cachefrom: JSON.stringify(opts.cacheFrom) } : {}),
          buildid,
          version: '2',
        } as unknown as Docker.ImageBuildOptions);
      } catch (err) {
        throw this.engine.wrap(err);
      }
      const out: Progress[] = await this.engine.follow(stream, (p) => {
        if (p.id === BUILDKIT_TRACE_ID) {
          const status = BuildkitProgress.decode(p.aux);
          if (status) write(progress.feed(status));
        } else if (typeof p.aux === 'object' && p.aux.ID) id = p.aux.ID;
        else if (p.stream) write(p.stream);
      });
      const rest = progress.flush();
      if (rest) write(rest);
      const failed = out.find((p) => p.errorDetail || p.error);
      if (failed) {
        const message = (failed.errorDetail?.message ?? failed.error ?? '').trim();
        const step = progress.failure;
        if (!step) write(`ERROR: ${message}\n`);
        throw new UserBuildError(step ? `step "${step.step}": ${step.error}` : message);
      }
      return id;
    } finally {
      opts.signal.removeEventListener('abort', cancel);
    }
  }

  private async cancel(buildid: string): Promise<void> {
    await new Promise<void>((resolve) =>
      this.engine.docker.modem.dial({ path: '/build/cancel?', method: 'POST', options: { id: buildid }, statusCodes: { 200: true, 404: true } }, () => resolve()),
    );
  }
}
