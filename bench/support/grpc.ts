import { credentials, Metadata, type ClientReadableStream } from '@grpc/grpc-js';
import { BuildRequest, BuildStatus, ImageBuilderClient, LogsRequest, ResolveWorkspaceImageRequest, type BuildResponse, type BuildSource, type LogsResponse, type ResolveWorkspaceImageResponse } from '@imgbuilder/proto';

/**
 * A client on its own HTTP/2 connection. grpc-js shares one connection between clients of the same target by
 * default; separate connections model separate callers (Gitpod server pods), which is what the scenarios claim.
 */
export function ownClient(addr: string): ImageBuilderClient {
  return new ImageBuilderClient(addr, credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
}

export function waitReady(c: ImageBuilderClient, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => c.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve())));
}

export async function clients(addrs: string[], n: number): Promise<ImageBuilderClient[]> {
  const cs = Array.from({ length: n }, (_, i) => ownClient(addrs[i % addrs.length]));
  await Promise.all(cs.map((c) => waitReady(c)));
  return cs;
}

export const isTerminal = (s: BuildStatus) => s === BuildStatus.done_success || s === BuildStatus.done_failure;

export interface BuildCall {
  /** The first message (carries build_id and the log URL when a build runs). */
  first: Promise<BuildResponse>;
  /** The terminal message and when it arrived (ms, Date.now()); rejects on a stream error or timeout. */
  done: Promise<{ msg: BuildResponse; at: number }>;
  cancel(): void;
}

export function startBuild(c: ImageBuilderClient, req: { source: BuildSource; forceRebuild?: boolean }, timeoutMs = 300_000): BuildCall {
  const stream = c.build(BuildRequest.fromPartial({ ...req, triggeredBy: 'bench' }));
  let resolveFirst!: (m: BuildResponse) => void;
  let rejectFirst!: (e: Error) => void;
  const first = new Promise<BuildResponse>((res, rej) => {
    resolveFirst = res;
    rejectFirst = rej;
  });
  const done = new Promise<{ msg: BuildResponse; at: number }>((resolve, reject) => {
    let seen = false;
    const timer = setTimeout(() => {
      stream.cancel();
      reject(new Error(`Build stream had no terminal status within ${timeoutMs} ms`));
    }, timeoutMs);
    stream.on('data', (m: BuildResponse) => {
      const at = Date.now();
      if (!seen) {
        seen = true;
        resolveFirst(m);
      }
      if (isTerminal(m.status)) {
        clearTimeout(timer);
        resolve({ msg: m, at });
      }
    });
    stream.on('error', (e: Error) => {
      clearTimeout(timer);
      rejectFirst(e);
      reject(e);
    });
    stream.on('end', () => {
      clearTimeout(timer);
      const e = new Error('Build stream ended without a terminal status');
      rejectFirst(e);
      reject(e);
    });
  });
  first.catch(() => undefined);
  done.catch(() => undefined);
  return { first, done, cancel: () => stream.cancel() };
}

/** Builds to the end; throws unless it succeeded. Returns the terminal message and the call's duration. */
export async function buildOk(c: ImageBuilderClient, req: { source: BuildSource; forceRebuild?: boolean }, timeoutMs?: number): Promise<{ msg: BuildResponse; first: BuildResponse; ms: number }> {
  const t0 = Date.now();
  const call = startBuild(c, req, timeoutMs);
  const [{ msg, at }, first] = await Promise.all([call.done, call.first]);
  if (msg.status !== BuildStatus.done_success) throw new Error(`build failed: ${msg.message}`);
  return { msg, first, ms: at - t0 };
}

export function resolveWorkspace(c: ImageBuilderClient, source: BuildSource): Promise<ResolveWorkspaceImageResponse> {
  return new Promise((resolve, reject) =>
    c.resolveWorkspaceImage(ResolveWorkspaceImageRequest.fromPartial({ source }), (err, res) => (err ? reject(err) : resolve(res!))),
  );
}

/** A Build call that must answer from the registry alone: exactly one `done_success` message. */
export function cacheHitBuild(c: ImageBuilderClient, source: BuildSource): Promise<void> {
  return new Promise((resolve, reject) => {
    const stream = c.build(BuildRequest.fromPartial({ source }));
    let ok = false;
    stream.on('data', (m: BuildResponse) => {
      if (m.status === BuildStatus.done_success) ok = true;
    });
    stream.on('error', reject);
    stream.on('end', () => (ok ? resolve() : reject(new Error('cache-hit Build did not answer done_success'))));
  });
}

const HEALTH_CHECK = '/grpc.health.v1.Health/Check';

/** grpc.health.v1 Check with an empty service name (the API answers after one Redis PING). */
export function healthCheck(c: ImageBuilderClient): Promise<void> {
  return new Promise((resolve, reject) =>
    c.makeUnaryRequest(
      HEALTH_CHECK,
      (x: Buffer) => x,
      (x: Buffer) => x,
      Buffer.alloc(0),
      new Metadata(),
      {},
      (err) => (err ? reject(err) : resolve()),
    ),
  );
}

/** Logs by build id; `onChunk` sees each message with its arrival time (ms, wall clock). */
export function logsStream(c: ImageBuilderClient, buildId: string, onChunk: (text: string, atMs: number) => void): { ended: Promise<void>; stream: ClientReadableStream<LogsResponse> } {
  const stream = c.logs(LogsRequest.fromPartial({ buildId }));
  const ended = new Promise<void>((resolve, reject) => {
    stream.on('data', (m: LogsResponse) => onChunk(Buffer.from(m.content).toString('utf8'), wallMs()));
    stream.on('error', reject);
    stream.on('end', resolve);
  });
  ended.catch(() => undefined);
  return { ended, stream };
}

const anchor = Date.now() - performance.now();
/** Wall-clock milliseconds with sub-millisecond resolution (Date.now() anchored once, then the monotonic clock). */
export function wallMs(): number {
  return anchor + performance.now();
}
