import { isTerminal, type BuildEvent, type BuildRecord, type BuildStore } from '@imgbuilder/common/build-store';
import { notFound } from '@imgbuilder/common/errors';
import type { ObjectStore } from '@imgbuilder/common/object-store';
import type { EventHub } from './event-hub.js';

/** A piece of a build's log: raw bytes from the object store, or a live log event (kept whole so it is encoded once). */
export type LogPiece = Buffer | (BuildEvent & { kind: 'log' });

export interface BuildLogDeps {
  store: BuildStore;
  objects: ObjectStore;
  hub: EventHub;
}

/**
 * A build's log from its first byte to its end, whoever reads it (`Logs`, the supervisor endpoint): a finished
 * build's from the object store (byte for byte what the stream carried), a running one's replayed from the event
 * stream and followed until the build ends.
 */
export async function* readBuildLog(record: BuildRecord, d: BuildLogDeps, signal: AbortSignal): AsyncGenerator<LogPiece> {
  if (isTerminal(record.state) && !record.logPending) {
    const body = await d.objects.getStream(record.logKey).catch(() => undefined);
    if (body) {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        if (signal.aborted) return;
        yield chunk;
      }
      return;
    }
    if (!(await d.store.eventsExist(record.id))) throw notFound('build log not found in object storage (it may have expired under the bucket lifecycle policy)');
  }
  for await (const e of d.hub.events(record.id, signal)) {
    if (e.kind === 'log') yield e;
  }
}
