import { StringDecoder } from 'node:string_decoder';
import Docker from 'dockerode';
import { isConnectionError } from '@imgbuilder/common/errors';
import type { RegistryCredentials } from '@imgbuilder/common/registry-auth';
import { EngineError, EngineUnavailableError, UserBuildError } from './errors.js';

/** Engine progress message (JSON lines of /build, /images/create, /images/push). */
export interface Progress {
  stream?: string;
  status?: string;
  progress?: string;
  id?: string;
  error?: string;
  errorDetail?: { message?: string };
  /** BuildKit builds send their progress here as a base64 string (id `moby.buildkit.trace`). */
  aux?: { ID?: string; Digest?: string } | string;
}

/** How long handling progress messages may hold the event loop before the socket is read again. */
const DRAIN_SLICE_MS = 10;
/** A backlog of unread progress this large pauses the socket (the engine waits; memory stays bounded). */
const DRAIN_BACKLOG_BYTES = 64 * 1024 * 1024;

export function createDocker(dockerHost: string): Docker {
  const m = /^unix:\/\/(.+)$/.exec(dockerHost);
  if (m) return new Docker({ socketPath: m[1] });
  const u = new URL(dockerHost.replace(/^tcp:/, 'http:'));
  return new Docker({ host: u.hostname, port: Number(u.port || 2375), protocol: u.protocol === 'https:' ? 'https' : 'http' });
}

function authconfig(c: RegistryCredentials | undefined, serveraddress: string): Record<string, string> {
  if (!c) return {};
  return { username: c.username ?? '', password: c.password ?? '', auth: c.auth ?? '', serveraddress };
}

/**
 * Thin, typed wrapper over dockerode: each call follows the engine's progress stream, turns in-stream errors into
 * EngineError (dockerode reports a failed build as success), and forwards human-readable output.
 */
export class DockerEngine {
  constructor(
    readonly docker: Docker,
    private readonly describeHost: string,
    /** Labels put on every image this engine builds (disk hygiene prunes by them). */
    readonly labels: Record<string, string> = {},
  ) {}

  async ping(): Promise<void> {
    try {
      await this.docker.ping();
    } catch (err) {
      throw this.wrap(err);
    }
  }

  /** The engine error for a failed call: EngineUnavailableError when the engine could not be reached at all. */
  wrap(err: unknown): Error {
    if (err instanceof EngineError) return err;
    if (isConnectionError(err)) return new EngineUnavailableError(`Docker engine at ${this.describeHost} is unreachable (${(err as { code?: string }).code})`);
    return new EngineError((err as Error)?.message ?? String(err));
  }

  /**
   * Reads a progress stream (JSON lines) to its end, handing each message to `onProgress` as it arrives and keeping
   * none: memory stays flat however many messages a build sends (dockerode's followProgress keeps them all).
   * In-stream errors are not handed on: the first one is returned for the caller to judge.
   *
   * The socket is drained as fast as it delivers and the messages are handled in slices between reads: Docker 20.10's
   * BuildKit, held back by a slow reader while a step prints fast, piles up over 1 MiB of step output and then loops
   * on empty progress messages for ever (a `curl --limit-rate 1M` reader sets it off every time; a fast one never).
   * Only a backlog past DRAIN_BACKLOG_BYTES pauses the socket.
   */
  async follow(stream: NodeJS.ReadableStream, onProgress: (p: Progress) => void): Promise<Progress | undefined> {
    let failure: Progress | undefined;
    const handle = (line: string) => {
      if (!line.trim()) return;
      let p: Progress;
      try {
        p = JSON.parse(line) as Progress;
      } catch {
        throw new EngineError(`the engine sent an unreadable progress message: ${line.slice(0, 200)}`);
      }
      if (p.errorDetail || p.error) failure ??= p;
      else onProgress(p);
    };
    const decoder = new StringDecoder('utf8');
    const backlog: (Buffer | string)[] = [];
    let backlogBytes = 0;
    let rest = '';
    let ended = false;
    let scheduled = false;
    return new Promise<Progress | undefined>((resolve, reject) => {
      let done = false;
      const finish = (err?: unknown) => {
        if (done) return;
        done = true;
        stream.removeListener('data', onData);
        if (err) {
          (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
          reject(this.wrap(err));
        } else resolve(failure);
      };
      const drain = () => {
        scheduled = false;
        try {
          const until = performance.now() + DRAIN_SLICE_MS;
          while (backlog.length && performance.now() < until) {
            const chunk = backlog.shift()!;
            backlogBytes -= chunk.length;
            const text = rest + (typeof chunk === 'string' ? chunk : decoder.write(chunk));
            let start = 0;
            for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
              handle(text.slice(start, nl));
              start = nl + 1;
            }
            rest = text.slice(start);
          }
          if (stream.isPaused() && backlogBytes < DRAIN_BACKLOG_BYTES / 2 && !ended) stream.resume();
          if (backlog.length) schedule();
          else if (ended) {
            handle(rest + decoder.end());
            finish();
          }
        } catch (err) {
          finish(err);
        }
      };
      const schedule = () => {
        if (scheduled || done) return;
        scheduled = true;
        setImmediate(drain);
      };
      const onData = (chunk: Buffer | string) => {
        backlog.push(chunk);
        backlogBytes += chunk.length;
        if (backlogBytes > DRAIN_BACKLOG_BYTES) stream.pause();
        schedule();
      };
      stream.on('data', onData);
      stream.once('end', () => {
        ended = true;
        schedule();
      });
      stream.once('error', (err) => finish(err));
      stream.once('close', () => {
        if (!ended) finish(Object.assign(new Error('the engine closed the progress stream early'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }));
      });
    });
  }

  /** Pushes `repository:tag`; returns the manifest digest. */
  async push(repository: string, tag: string, creds: RegistryCredentials | undefined, signal: AbortSignal, write: (t: string) => void): Promise<string> {
    let digest = '';
    let failure: Progress | undefined;
    try {
      const stream = await this.docker.getImage(`${repository}:${tag}`).push({ tag, authconfig: authconfig(creds, repository.split('/')[0]), abortSignal: signal } as object);
      failure = await this.follow(stream, (p) => {
        if (typeof p.aux === 'object' && p.aux.Digest) digest = p.aux.Digest;
        if (p.status && !p.progress) write(`${p.id ? `${p.id}: ` : ''}${p.status}\n`);
      });
    } catch (err) {
      throw this.wrap(err);
    }
    if (failure) throw new EngineError(`push of ${repository}:${tag} failed: ${registryFailure(repository, failure)}`);
    return digest;
  }

  /** Pulls an image (tag or digest form). */
  async pull(ref: string, creds: RegistryCredentials | undefined, signal: AbortSignal, write: (t: string) => void): Promise<void> {
    let failure: Progress | undefined;
    try {
      const stream = await this.docker.pull(ref, { authconfig: authconfig(creds, ref.split('/')[0]), abortSignal: signal } as object);
      failure = await this.follow(stream, (p) => {
        if (p.status && !p.progress) write(`${p.id ? `${p.id}: ` : ''}${p.status}\n`);
      });
    } catch (err) {
      throw this.wrap(err);
    }
    if (failure) throw new UserBuildError(`pull of ${ref} failed: ${registryFailure(ref, failure)}`);
  }

  async tag(image: string, repository: string, tag: string): Promise<void> {
    try {
      await this.docker.getImage(image).tag({ repo: repository, tag });
    } catch (err) {
      throw this.wrap(err);
    }
  }

  /** Removes a tag; the image's layers stay as build cache until disk hygiene prunes them. */
  async untag(name: string): Promise<void> {
    await this.docker
      .getImage(name)
      .remove({ noprune: true })
      .catch(() => undefined);
  }
}

/** The engine's message, prefixed with the registry's name when the engine could not reach it at all. */
function registryFailure(image: string, p: Progress): string {
  const text = (p.errorDetail?.message ?? p.error ?? '').trim();
  const unreachable = /connection refused|no such host|i\/o timeout|network is unreachable|no route to host|connection reset/i.test(text);
  return unreachable ? `registry ${image.split('/')[0]} is unreachable (${text})` : text;
}
