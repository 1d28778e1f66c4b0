import { compareStreamIds, type BuildEvent } from '@imgbuilder/common/build-life';

/** What a buffered event costs, roughly: its text and the object around it. */
export function eventBytes(e: BuildEvent): number {
  return e.kind === 'log' ? e.text.length + 64 : 128;
}

/**
 * The events of one build's stream that this API process has read, oldest first, shared by every local subscriber
 * of the build. A subscriber that joins late replays from here instead of reading Redis on its own: 8,000 Logs
 * streams on one build cost one copy of the log (and, with encodeLogEvent, one encoding of each chunk), not 8,000.
 * Bounded: past `maxBytes` the oldest events are dropped, and a subscriber behind what is left reads Redis.
 */
export class EventHistory {
  private events: BuildEvent[] = [];
  /** Index of the oldest kept event in `events` (dropped ones are compacted away now and then). */
  private start = 0;
  private bytes = 0;
  /** The history holds every event of the stream after this id. */
  private from = '0-0';

  constructor(private readonly maxBytes: number) {}

  get empty(): boolean {
    return this.start === this.events.length;
  }

  /** Adds events read after the newest one held. */
  append(batch: BuildEvent[]): void {
    for (const e of batch) {
      this.events.push(e);
      this.bytes += eventBytes(e);
    }
    while (this.bytes > this.maxBytes && this.start < this.events.length - 1) {
      const dropped = this.events[this.start++];
      this.bytes -= eventBytes(dropped);
      this.from = dropped.id;
    }
    if (this.start > 1024 && this.start * 2 > this.events.length) {
      this.events = this.events.slice(this.start);
      this.start = 0;
    }
  }

  /** Up to `max` events after `cursor`, oldest first; undefined when the history no longer reaches back that far. */
  after(cursor: string, max: number): BuildEvent[] | undefined {
    if (compareStreamIds(cursor, this.from) < 0) return undefined;
    let lo = this.start;
    let hi = this.events.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareStreamIds(this.events[mid].id, cursor) <= 0) lo = mid + 1;
      else hi = mid;
    }
    return this.events.slice(lo, lo + max);
  }
}
