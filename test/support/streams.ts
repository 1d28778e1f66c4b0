import type { ClientReadableStream, ServiceError } from '@grpc/grpc-js';
import { BuildRequest, BuildStatus, LogsRequest, type BuildResponse, type ImageBuilderClient, type LogsResponse } from '@imgbuilder/proto';

/** A server stream being read in the background: its messages so far, and how it ended. Never rejects. */
export interface WatchedStream<T> {
  readonly messages: T[];
  /** Resolves when the stream ends, fails, or runs past its bound (then `error` says so). */
  readonly ended: Promise<{ messages: T[]; error?: ServiceError | Error }>;
  /** Resolves once `pred` holds for the messages so far; rejects after `timeoutMs` or if the stream ends first. */
  until(pred: (messages: T[]) => boolean, what: string, timeoutMs?: number): Promise<void>;
  cancel(): void;
}

export function watch<T>(stream: ClientReadableStream<T>, timeoutMs = 180_000): WatchedStream<T> {
  const messages: T[] = [];
  let checks: (() => void)[] = [];
  let finished = false;
  const ended = new Promise<{ messages: T[]; error?: ServiceError | Error }>((resolve) => {
    const timer = setTimeout(() => {
      stream.cancel();
      done(new Error(`stream did not end within ${timeoutMs} ms; got ${messages.length} messages`));
    }, timeoutMs);
    const done = (error?: ServiceError | Error) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      resolve({ messages, error });
      for (const c of checks) c();
    };
    stream.on('data', (m: T) => {
      messages.push(m);
      for (const c of checks) c();
    });
    stream.on('error', (e: ServiceError) => done(e));
    stream.on('end', () => done());
  });
  return {
    messages,
    ended,
    until(pred, what, waitMs = 120_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => fail(new Error(`timed out after ${waitMs} ms waiting for ${what}`)), waitMs);
        const check = () => {
          if (pred(messages)) {
            cleanup();
            resolve();
          } else if (finished) fail(new Error(`stream ended before ${what}`));
        };
        const fail = (e: Error) => {
          cleanup();
          reject(e);
        };
        const cleanup = () => {
          clearTimeout(timer);
          checks = checks.filter((c) => c !== check);
        };
        checks.push(check);
        check();
      });
    },
    cancel: () => stream.cancel(),
  };
}

export type BuildArgs = Parameters<typeof BuildRequest.fromPartial>[0];

export function watchBuild(client: ImageBuilderClient, req: BuildArgs, timeoutMs?: number): WatchedStream<BuildResponse> {
  return watch(client.build(BuildRequest.fromPartial(req)), timeoutMs);
}

export function watchLogs(client: ImageBuilderClient, req: Parameters<typeof LogsRequest.fromPartial>[0], timeoutMs?: number): WatchedStream<LogsResponse> {
  return watch(client.logs(LogsRequest.fromPartial(req)), timeoutMs);
}

export const textOf = (msgs: LogsResponse[]) => Buffer.concat(msgs.map((m) => Buffer.from(m.content))).toString('utf8');

export const isTerminalStatus = (s: BuildStatus) => s === BuildStatus.done_success || s === BuildStatus.done_failure;
export const terminalMessages = (msgs: BuildResponse[]) => msgs.filter((m) => isTerminalStatus(m.status));
/** The last message a stream delivered (the terminal one, once it ended). */
export const lastOf = (msgs: BuildResponse[]) => msgs[msgs.length - 1];
export const buildIdOf = (msgs: BuildResponse[]) => msgs.find((m) => m.info?.buildId)?.info?.buildId;
