import { type BuildEvent, type BuildRecord, type BuildStore, isTerminal, type LogStore, missingLine } from '@imgbuilder/common/build-life';
import { BuildLogExpired } from '@imgbuilder/common/errors';
import type { EventHub } from './event-hub.js';

/** A reader behind the Redis tail waits this long for the running build's next log upload to cover the gap. */
const GAP_WAIT_MS = 30_000;
/** The part of a log read from the object goes out in pieces this big (bounded memory per reader). */
const PAGE_BYTES = 1024 * 1024;

/** A piece of a build's log: raw bytes from the object store, or a live log event (kept whole so it is encoded once). */
export type LogPiece = Buffer | (BuildEvent & { kind: 'log' });

/** How the build ended, as its terminal state event (or record) says. */
export type LogEnd = Pick<BuildRecord, 'state' | 'message'>;

export interface BuildLogDeps {
  store: BuildStore;
  logStore: LogStore;
  hub: EventHub;
}

/** A build's log being read; `ended` holds the build's final state once the log was read to its end. */
export interface BuildLogRead extends AsyncIterable<LogPiece> {
  readonly ended: LogEnd | undefined;
}

/**
 * A build's log from byte `from` to its end, whoever reads it (`Logs`, the supervisor endpoint, the dashboard): a
 * finished build's from the object store (byte for byte what the stream carried), a running one's replayed from the
 * event stream and followed until the build ends. Redis holds only the log's tail, so what was trimmed before this
 * reader got to it, and whatever follows a stream that expired under a slow reader, comes from the object.
 */
export function readBuildLog(record: BuildRecord, d: BuildLogDeps, signal: AbortSignal, from = 0): BuildLogRead {
  const read = {
    ended: undefined as LogEnd | undefined,
    async *[Symbol.asyncIterator](): AsyncGenerator<LogPiece> {
      read.ended = yield* pieces(record, d, signal, from);
    },
  };
  return read;
}

async function* pieces(record: BuildRecord, d: BuildLogDeps, signal: AbortSignal, from: number): AsyncGenerator<LogPiece, LogEnd | undefined> {
  if (isTerminal(record.state) && !record.logPending) {
    // A tail window (from > 0) of a finished log is read from the object alone: the store's error is the answer.
    const first = await page(d, record.logKey, from).catch((err: unknown) => {
      if (from > 0) throw err;
      return undefined;
    });
    if (first) {
      yield* objectFrom(d, record.logKey, from, first, signal);
      return { state: record.state, message: record.message };
    }
    if (!(await d.store.eventsExist(record.id))) throw new BuildLogExpired(record.id, 'build log not found in object storage (it may have expired under the bucket lifecycle policy)');
  }
  let sent = from;
  let ended: LogEnd | undefined;
  for await (const e of d.hub.events(record.id, signal)) {
    if (e.kind === 'state') {
      if (e.streamGone) {
        const first = await page(d, record.logKey, sent).catch(() => undefined);
        if (first) yield* objectFrom(d, record.logKey, sent, first, signal);
      }
      if (isTerminal(e.state)) ended = { state: e.state, message: e.message };
      continue;
    }
    if (e.offset !== undefined && e.offset < from) {
      // Before the reader's start: only the part from `from` on goes out.
      const part = Buffer.from(e.text).subarray(from - e.offset);
      if (part.length) {
        sent += part.length;
        yield part;
      }
      continue;
    }
    if (e.offset !== undefined && e.offset > sent) {
      while (sent < e.offset && !signal.aborted) {
        const to = Math.min(e.offset, sent + PAGE_BYTES);
        const got = await d.logStore.objectRange(record.logKey, sent, to, GAP_WAIT_MS);
        if (got.bytes.length) yield got.bytes;
        if (!got.complete) {
          yield missingLine(e.offset - sent - got.bytes.length);
          break;
        }
        sent = to;
      }
      sent = e.offset;
    }
    sent += Buffer.byteLength(e.text);
    yield e;
  }
  return ended;
}

/** Bytes [from, from + PAGE_BYTES) of the object; rejects when the store cannot read it. */
function page(d: BuildLogDeps, logKey: string, from: number): Promise<Buffer> {
  return d.logStore.objectPage(logKey, from, from + PAGE_BYTES);
}

/** The object from `from` (whose first page is `first`) to its end, a page at a time. */
async function* objectFrom(d: BuildLogDeps, logKey: string, from: number, first: Buffer, signal: AbortSignal): AsyncGenerator<Buffer> {
  for (let got = first, pos = from; ; got = await page(d, logKey, pos)) {
    if (got.length) yield got;
    if (got.length < PAGE_BYTES) return;
    pos += got.length;
    if (signal.aborted) return;
  }
}
