const NOT_READY = Symbol('not ready');

/** Resolves after the current turn of the event loop (and every promise settled in it). */
const nextTurn = () => new Promise<typeof NOT_READY>((resolve) => setImmediate(resolve, NOT_READY));

/**
 * Groups what an async iterable has ready at once (within one turn of the event loop: a replay from memory, a batch
 * fanned out by the event hub) into arrays of up to about `maxBytes`; an item that is not ready yet ends the batch.
 * A Logs stream replaying a build's log then sends a few messages instead of one per log chunk: each message a
 * stream has queued costs the server several hundred bytes (grpc-js and HTTP/2 per-write state, a framed copy),
 * which for thousands of streams whose clients read slowly is most of their memory.
 */
export async function* readyBatches<T>(source: AsyncIterable<T>, bytes: (item: T) => number, maxBytes: number): AsyncGenerator<T[]> {
  const it = source[Symbol.asyncIterator]();
  let pending = it.next();
  let finished = false;
  try {
    for (;;) {
      const first = await pending;
      if (first.done) return void (finished = true);
      const batch = [first.value];
      let size = bytes(first.value);
      for (;;) {
        pending = it.next();
        if (size >= maxBytes) break;
        const r = await Promise.race([pending, nextTurn()]);
        if (r === NOT_READY) break;
        if (r.done) {
          finished = true;
          yield batch;
          return;
        }
        batch.push(r.value);
        size += bytes(r.value);
      }
      yield batch;
    }
  } finally {
    // Not awaited: a read still in flight (waiting for the next log line) ends once the stream's signal aborts.
    if (!finished) void pending.then(() => it.return?.()).catch(() => undefined);
  }
}
