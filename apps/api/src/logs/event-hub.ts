import type { RedisClient } from '@imgbuilder/common/redis';
import { type BuildStore, compareStreamIds, isTerminal, type BuildEvent } from '@imgbuilder/common/build-life';
import { BuildStateUnavailable } from '@imgbuilder/common/errors';

const PAGE = 500;
/** Safety net for notifications lost while Redis pub/sub reconnects. */
const POLL_MS = 1_000;
/** A live subscriber with more than this undelivered falls back to reading Redis at its own pace. */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;
/** A subscription slower than this (Redis reconnecting) does not hold up readers: the poll covers the gap. */
const SUBSCRIBE_WAIT_MS = 2_000;
/** Every this many polls a tail checks that its build still exists (Redis restarted without persistence). */
const LOST_CHECK_POLLS = 10;

export interface EventHubOptions {
  /** Says why open streams must end with UNAVAILABLE (Redis away too long), or undefined while they may wait. */
  unavailable?: () => string | undefined;
  /** Each batch read live (not a replay), for the log-latency metric. */
  onLive?: (batch: BuildEvent[]) => void;
}

/**
 * Tails builds' event streams for every local subscriber of this API process.
 *
 * Each build watched here has one shared tail: one Redis pub/sub subscription and one XRANGE per change, fanned out
 * to all local subscribers that are caught up. A new or slow subscriber first reads the stream on its own from its
 * cursor, and joins the shared tail once it has caught up; so 500 subscribers cost one read per change, and a slow
 * one costs memory only up to MAX_BUFFERED_BYTES.
 */
export class EventHub {
  private readonly tails = new Map<string, Tail>();

  constructor(
    private readonly store: BuildStore,
    private readonly pubsub: RedisClient,
    private readonly opts: EventHubOptions = {},
  ) {
    pubsub.on('message', (channel: string) => {
      this.tails.get(store.buildOfNotification(channel))?.wake();
    });
  }

  /** Events of a build from its start (or after `afterId`), ending after a terminal state event or on abort. */
  async *events(buildId: string, signal: AbortSignal, afterId = '0-0'): AsyncGenerator<BuildEvent> {
    let tail = this.tails.get(buildId);
    if (!tail) {
      tail = new Tail(buildId, { store: this.store, pubsub: this.pubsub, onClose: () => this.tails.delete(buildId), unavailable: this.opts.unavailable, onLive: this.opts.onLive });
      this.tails.set(buildId, tail);
    }
    const sub = new Subscriber(afterId);
    tail.add(sub);
    const onAbort = () => sub.notify();
    signal.addEventListener('abort', onAbort);
    try {
      while (!signal.aborted) {
        if (sub.error) throw new BuildStateUnavailable(sub.error);
        if (sub.mode === 'catchup') {
          const batch = await this.store.readEvents(buildId, sub.cursor, PAGE);
          if (batch.length === 0 && !(await this.store.eventsExist(buildId))) {
            // The stream expired under a slow reader (it outlives the build only briefly): end with the record's
            // terminal status; the caller continues the log from the object.
            const rec = await this.store.get(buildId);
            if (!rec) throw new BuildStateUnavailable('the build record is gone from Redis (restarted without persistence?); call Build again');
            if (isTerminal(rec.state)) {
              yield { id: sub.cursor, kind: 'state', state: rec.state, message: rec.message, streamGone: true };
              return;
            }
          }
          for (const e of batch) {
            sub.cursor = e.id;
            yield e;
            if (e.kind === 'state' && isTerminal(e.state)) return;
          }
          await tail.ready;
          // Single-threaded: no shared fetch can interleave between this check and the switch.
          if (batch.length < PAGE && compareStreamIds(sub.cursor, tail.lastId) >= 0) sub.mode = 'live';
          continue;
        }
        const e = sub.queue.shift();
        if (!e) {
          await sub.waitForData();
          continue;
        }
        sub.bufferedBytes -= size(e);
        if (compareStreamIds(e.id, sub.cursor) <= 0) continue;
        sub.cursor = e.id;
        yield e;
        if (e.kind === 'state' && isTerminal(e.state)) return;
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      tail.remove(sub);
    }
  }
}

class Subscriber {
  mode: 'catchup' | 'live' = 'catchup';
  queue: BuildEvent[] = [];
  bufferedBytes = 0;
  error?: string;
  private waiter?: () => void;
  constructor(public cursor: string) {}

  push(events: BuildEvent[]): void {
    if (this.mode !== 'live') return;
    for (const e of events) {
      this.queue.push(e);
      this.bufferedBytes += size(e);
    }
    if (this.bufferedBytes > MAX_BUFFERED_BYTES) {
      // Too far behind: drop the buffer and re-read from Redis at the subscriber's own pace.
      this.queue = [];
      this.bufferedBytes = 0;
      this.mode = 'catchup';
    }
    this.notify();
  }

  fail(why: string): void {
    this.error = why;
    this.notify();
  }

  notify(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  waitForData(): Promise<void> {
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }
}

interface TailOptions extends EventHubOptions {
  store: BuildStore;
  /** The hub's subscriber connection, shared by every tail. */
  pubsub: RedisClient;
  /** Called once the last subscriber left, so the hub forgets this tail. */
  onClose: () => void;
}

class Tail {
  lastId = '0-0';
  readonly ready: Promise<void>;
  private readonly subs = new Set<Subscriber>();
  private fetching = false;
  private again = false;
  private readonly timer: NodeJS.Timeout;
  private closed = false;

  private readonly store: BuildStore;
  private readonly pubsub: RedisClient;
  private readonly onClose: () => void;
  private readonly unavailable?: () => string | undefined;
  private readonly onLive?: (batch: BuildEvent[]) => void;

  constructor(
    private readonly buildId: string,
    opts: TailOptions,
  ) {
    const { store, pubsub } = opts;
    ({ store: this.store, pubsub: this.pubsub, onClose: this.onClose, unavailable: this.unavailable, onLive: this.onLive } = opts);
    let waited = false;
    const subscribed = (async () => {
      await store.subscribeEvents(pubsub, buildId);
      const last = await store.lastEventId(buildId);
      // After the wait ran out, fetches already move lastId; a later read must not skip past what they delivered.
      if (!waited) this.lastId = last;
    })().catch(() => {
      // Redis away: start from the beginning; subscribers filter what they already have.
    });
    this.ready = Promise.race([
      subscribed,
      new Promise<void>((resolve) => setTimeout(() => ((waited = true), resolve()), SUBSCRIBE_WAIT_MS).unref()),
    ]);
    let polls = 0;
    this.timer = setInterval(() => {
      const why = this.unavailable?.();
      if (why) for (const s of this.subs) s.fail(why);
      else this.wake();
      if (++polls % LOST_CHECK_POLLS === 0) void this.checkLost();
    }, POLL_MS);
    this.timer.unref();
  }

  add(s: Subscriber): void {
    this.subs.add(s);
  }

  remove(s: Subscriber): void {
    this.subs.delete(s);
    if (this.subs.size === 0 && !this.closed) {
      this.closed = true;
      clearInterval(this.timer);
      this.onClose();
      this.store.unsubscribeEvents(this.pubsub, this.buildId).catch(() => undefined);
    }
  }

  wake(): void {
    if (this.fetching) {
      this.again = true;
      return;
    }
    this.fetching = true;
    void this.fetch().finally(() => {
      this.fetching = false;
      if (this.again) {
        this.again = false;
        this.wake();
      }
    });
  }

  /** A build whose record vanished before it ended will never end: its streams fail instead of waiting for ever. */
  private async checkLost(): Promise<void> {
    const lost = await this.store.get(this.buildId).then(
      (r) => r === undefined,
      () => false,
    );
    if (lost) for (const s of this.subs) s.fail('the build record is gone from Redis (restarted without persistence?); call Build again');
  }

  private async fetch(): Promise<void> {
    await this.ready;
    try {
      for (;;) {
        const batch = await this.store.readEvents(this.buildId, this.lastId, PAGE);
        if (batch.length === 0) return;
        this.lastId = batch[batch.length - 1].id;
        this.onLive?.(batch);
        for (const s of this.subs) s.push(batch);
        if (batch.length < PAGE) return;
      }
    } catch {
      // Redis away: the poll timer retries.
    }
  }
}

function size(e: BuildEvent): number {
  return e.kind === 'log' ? e.text.length + 64 : 128;
}
