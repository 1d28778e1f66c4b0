import type Docker from 'dockerode';
import type { DockerEngine } from '../docker-engine.js';
import { UserBuildError } from '../errors.js';
import type { BuildOptions, ImageBuilder } from './image-builder.js';

/**
 * The engine's legacy builder (`/build?version=1`): steps run one after another in ordinary containers, whose ids
 * the log names ("Running in <id>"), which lets the sandbox measure each step's disk use.
 */
export class ClassicBuilder implements ImageBuilder {
  readonly kind = 'classic';

  constructor(private readonly engine: DockerEngine) {}

  async build(context: NodeJS.ReadableStream, opts: BuildOptions, write: (text: string) => void): Promise<string> {
    // "Step N/M : …" of the step running, for the failure message.
    let lastStep = '';
    let id = '';
    let built = '';
    let stream: NodeJS.ReadableStream;
    try {
      stream = await this.engine.docker.buildImage(context, {
        t: opts.tag,
        dockerfile: opts.dockerfile,
        rm: true,
        forcerm: true,
        registryconfig: opts.registryconfig,
        abortSignal: opts.signal,
        labels: this.engine.labels,
        ...opts.limits,
        ...(opts.noCache ? { nocache: true } : {}),
        version: '1',
      } as Docker.ImageBuildOptions);
    } catch (err) {
      throw this.engine.wrap(err);
    }
    const failed = await this.engine.follow(stream, (p) => {
      if (p.stream) {
        const step = /^Step \d+\/\d+ : .*/m.exec(p.stream);
        if (step) lastStep = step[0].trim();
        const container = /^ ---> Running in ([0-9a-f]{12,64})/m.exec(p.stream);
        if (container) opts.onStepContainer?.(container[1]);
        built = /^Successfully built ([0-9a-f]+)/m.exec(p.stream)?.[1] ?? built;
        write(p.stream);
      } else if (p.status) write(`${p.status}${p.id ? ` ${p.id}` : ''}${p.progress ? ` ${p.progress}` : ''}\n`);
      if (typeof p.aux === 'object' && p.aux.ID) id = p.aux.ID;
    });
    if (failed) {
      const failure = (failed.errorDetail?.message ?? failed.error ?? '').trim();
      write(`${failure}\n`);
      throw new UserBuildError(lastStep ? `step "${lastStep}": ${failure}` : failure);
    }
    return id || built;
  }
}
