import { isTerminal, type BuildEvent, type BuildRecord, type BuildStore } from '@imgbuilder/common/build-store';
import { BuildLogExpired } from '@imgbuilder/common/errors';
import { missingLine, type LogStore } from '@imgbuilder/common/log-store';
import type { EventHub } from './event-hub.js';

/** A reader behind the Redis tail waits this long for the running build's next log upload to cover the gap. */
const GAP_WAIT_MS = 30_000;
/** The part of a log read from the object goes out in pieces this big (bounded memory per reader). */
const GAP_PAGE_BYTES = 1024 * 1024;

/** A piece of a build's log: raw bytes from the object store, or a live log event (kept whole so it is encoded once). */
export type LogPiece = Buffer | (BuildEvent & { kind: 'log' });

export interface BuildLogDeps {
  store: BuildStore;
  logStore: LogStore;
  hub: EventHub;
}

/**
 * A build's log from its first byte to its end, whoever reads it (`Logs`, the supervisor endpoint): a finished
 * build's from the object store (byte for byte what the stream carried), a running one's replayed from the event
 * stream and followed until the build ends. Redis holds only the log's tail, so what was trimmed before this reader
 * got to it, and whatever follows a stream that expired under a slow reader, comes from the object.
 */
export async function* readBuildLog(record: BuildRecord, d: BuildLogDeps, signal: AbortSignal): AsyncGenerator<LogPiece> {
  if (isTerminal(record.state) && !record.logPending) {
    const body = await d.logStore.openObject(record.logKey).catch(() => undefined);
    if (body) {
      yield* objectFrom(body, 0, signal);
      return;
    }
    if (!(await d.store.eventsExist(record.id))) throw new BuildLogExpired(record.id, 'build log not found in object storage (it may have expired under the bucket lifecycle policy)');
  }
  let sent = 0;
  for await (const e of d.hub.events(record.id, signal)) {
    if (e.kind === 'state') {
      if (e.streamGone) {
        const body = await d.logStore.openObject(record.logKey).catch(() => undefined);
        if (body) yield* objectFrom(body, sent, signal);
      }
      continue;
    }
    if (e.offset !== undefined && e.offset > sent) {
      while (sent < e.offset && !signal.aborted) {
        const to = Math.min(e.offset, sent + GAP_PAGE_BYTES);
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
}

/** The object's bytes from `offset` on. */
async function* objectFrom(body: unknown, offset: number, signal: AbortSignal): AsyncGenerator<Buffer> {
  let skip = offset;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    if (signal.aborted) return;
    const rest = skip >= chunk.length ? undefined : chunk.subarray(skip);
    skip = Math.max(0, skip - chunk.length);
    if (rest) yield rest;
  }
}
