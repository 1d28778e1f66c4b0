import { execFileSync } from 'node:child_process';
import { credentials, InterceptingCall, Metadata, type Interceptor } from '@grpc/grpc-js';
import { BuildControlClient, CancelBuildRequest, type CancelBuildResponse } from '@imgbuilder/proto';

/** A BuildControl client; `authorization` (e.g. `Bearer <token>`) is sent on every call. */
export function connectControl(addr: string, authorization?: string): BuildControlClient {
  const interceptors: Interceptor[] = authorization
    ? [(options, next) => new InterceptingCall(next(options), { start: (md, listener, go) => (md.set('authorization', authorization), go(md, listener)) })]
    : [];
  return new BuildControlClient(addr, credentials.createInsecure(), { interceptors });
}

export function cancelBuild(c: BuildControlClient, req: Parameters<typeof CancelBuildRequest.fromPartial>[0]): Promise<CancelBuildResponse> {
  return new Promise((resolve, reject) => c.cancelBuild(CancelBuildRequest.fromPartial(req), new Metadata(), { deadline: Date.now() + 30_000 }, (err, res) => (err ? reject(err) : resolve(res!))));
}

/**
 * Processes on this machine running `sleep <n>`: the engine's build steps are host processes, so a step whose
 * `sleep` argument is unique to a test is found (and found gone) here.
 */
export function sleepProcesses(n: number): number {
  const out = execFileSync('ps', ['-eo', 'args='], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.trim() === `sleep ${n}`).length;
}

/** Resolves once `check` holds, looking again on each tick of `intervalMs`; rejects after `timeoutMs`. */
export async function eventually(check: () => boolean | Promise<boolean>, what: string, timeoutMs: number, intervalMs = 100): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
