import { once } from 'node:events';
import type { ServerWritableStream } from '@grpc/grpc-js';

/** A client that has not read anything for this long is dropped instead of holding the server's memory. */
const DRAIN_TIMEOUT_MS = 120_000;

export class SlowClientError extends Error {
  override name = 'SlowClientError';
}

/**
 * Writes to a server stream honouring back-pressure: when `write()` returns false, waits for `'drain'`
 * (bounded), so a slow client never makes the server buffer without limit.
 */
export async function writeMessage<T>(call: ServerWritableStream<unknown, T>, message: T, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return;
  if (call.write(message)) return;
  const timeout = AbortSignal.timeout(DRAIN_TIMEOUT_MS);
  try {
    await once(call, 'drain', { signal: AbortSignal.any([signal, timeout]) });
  } catch (err) {
    if (timeout.aborted) throw new SlowClientError(`client read nothing for ${DRAIN_TIMEOUT_MS / 1000}s`);
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
