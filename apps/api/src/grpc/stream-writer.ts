import { once } from 'node:events';
import type { ServerWritableStream } from '@grpc/grpc-js';
import { SlowClientError } from '../errors.js';

/**
 * Writes to a server stream honouring back-pressure: when `write()` returns false, waits for `'drain'`
 * (at most `drainTimeoutMs`: a client that reads nothing that long is dropped), so a slow client never makes the
 * server buffer without limit.
 */
export async function writeMessage<T>(call: ServerWritableStream<unknown, T>, message: T, signal: AbortSignal, drainTimeoutMs: number): Promise<void> {
  if (signal.aborted) return;
  if (call.write(message)) return;
  const timeout = AbortSignal.timeout(drainTimeoutMs);
  try {
    await once(call, 'drain', { signal: AbortSignal.any([signal, timeout]) });
  } catch (err) {
    if (timeout.aborted) throw new SlowClientError(drainTimeoutMs, `client read nothing for ${drainTimeoutMs / 1000}s; stream dropped (reconnect to resume: Logs replays from the start)`);
    if (!signal.aborted) throw err;
  }
}

/** An AbortSignal that fires when the client goes away. */
export function callSignal(call: ServerWritableStream<unknown, unknown>): { signal: AbortSignal; done: () => void } {
  const ctl = new AbortController();
  const abort = () => ctl.abort();
  call.on('cancelled', abort);
  call.on('close', abort);
  call.on('error', abort);
  return {
    signal: ctl.signal,
    done: () => {
      call.off('cancelled', abort);
      ctl.abort();
    },
  };
}
