import { randomUUID } from 'node:crypto';
import type { RedisClient } from '../redis.js';
import { LogStore } from './log-store.js';
import type { RedisKeys } from './redis-keys.js';
import { runScript } from './scripts.js';
import { isTerminal, parseEvent, toRecord, type BuildEvent, type BuildRecord, type TerminalState } from './state.js';

/** Builds the dashboard lists at most (newest first); older ones stay findable by id while retained. */
export const RECENT_BUILDS_CAP = 10_000;

export interface CreateBuildInput {
  ref: string;
  baseRef: string;
  triggeredBy: string;
  /** How long the dedupe lock may outlive a vanished worker (build timeout plus slack). */
  lockTtlMs: number;
  retentionMs: number;
  /** Unix ms past which the reaper ends the build if no worker did (queue wait granted plus build timeout). */
  deadlineAt: number;
  /** W3C traceparent of the creating span, if traced. */
  traceparent?: string;
}

/** How a build ends (BuildStore.finish). */
export interface BuildFinish {
  buildId: string;
  /** The workspace ref whose dedupe lock the build releases. */
  ref: string;
  state: TerminalState;
  /** The terminal message clients see. */
  message: string;
  /** How long the record (and the ref's last build) stays in Redis. */
  retentionMs: number;
  /** How long the Redis copy of the log stays once the object store holds it. */
  eventsTtlMs: number;
  /** The log object is not complete yet: Logs keeps reading Redis until markLogUploaded. Default false. */
  logPending?: boolean;
  /** The attempt's fencing token: with it, nothing happens when a newer attempt holds the build. Default: none. */
  token?: number;
}

/** The build state machine in Redis: every transition is one atomic script. */
export class BuildStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {}

  /** Starts a build of `ref`, or joins the one already queued or running. */
  async createOrJoin(input: CreateBuildInput): Promise<{ created: boolean; id: string }> {
    const id = randomUUID();
    const k = this.keys;
    const res = (await runScript(
      this.redis,
      'create-or-join',
      [k.activeByRef(input.ref), k.build(id), k.lastByRef(input.ref), k.live, k.counters, k.recent],
      [
        id,
        input.ref,
        input.baseRef,
        Math.floor(Date.now() / 1000),
        LogStore.objectKey(id),
        input.triggeredBy,
        input.lockTtlMs,
        input.retentionMs,
        // The joined build's hash shares the hash tag, so it lives in the same Cluster slot as the declared keys.
        k.build(''),
        input.deadlineAt,
        RECENT_BUILDS_CAP,
        input.traceparent ?? '',
      ],
    )) as [number, string];
    return { created: res[0] === 1, id: res[1] };
  }

  async get(buildId: string): Promise<BuildRecord | undefined> {
    const h = await this.redis.hgetall(this.keys.build(buildId));
    return h.id ? toRecord(h) : undefined;
  }

  /** The build queued or running for a ref, if any. */
  async activeIdForRef(ref: string): Promise<string | undefined> {
    return (await this.redis.get(this.keys.activeByRef(ref))) ?? undefined;
  }

  /** The current or most recent build of a ref. */
  async latestIdForRef(ref: string): Promise<string | undefined> {
    return (await this.redis.get(this.keys.activeByRef(ref))) ?? (await this.redis.get(this.keys.lastByRef(ref))) ?? undefined;
  }

  async listLive(): Promise<BuildRecord[]> {
    const ids = await this.redis.zrange(this.keys.live, 0, -1);
    if (ids.length === 0) return [];
    return (await this.getMany(ids)).filter((r): r is BuildRecord => r !== undefined && !isTerminal(r.state));
  }

  /** The records of `ids` in one round trip, by position; undefined where a record is gone (expired or lost). */
  async getMany(ids: readonly string[]): Promise<(BuildRecord | undefined)[]> {
    const pipe = this.redis.pipeline();
    for (const id of ids) pipe.hgetall(this.keys.build(id));
    const res = (await pipe.exec()) ?? [];
    return ids.map((_, i) => {
      const h = res[i]?.[1] as Record<string, string> | null | undefined;
      return h?.id ? toRecord(h) : undefined;
    });
  }

  /**
   * A worker takes the build: it turns `running` unless it already ended (never flips a finished record back).
   * Returns the attempt's fencing token, or 0 when there is nothing to build.
   */
  async claim(buildId: string, deadlineAt: number): Promise<number> {
    return Number(await runScript(this.redis, 'claim', [this.keys.build(buildId), this.keys.events(buildId), this.keys.eventsNotify(buildId)], [deadlineAt, Date.now()]));
  }

  /** Makes the dedupe lock last `ttlMs` longer, if it is still this build's (refreshed while the build lives). */
  async extendLock(ref: string, buildId: string, ttlMs: number): Promise<void> {
    await runScript(this.redis, 'extend-lock', [this.keys.activeByRef(ref)], [buildId, ttlMs]);
  }

  /** Notes when a stage began (the dashboard's stage timings); the first mark of an attempt wins. */
  async markStage(buildId: string, stage: 'build' | 'push'): Promise<void> {
    await runScript(this.redis, 'mark-stage', [this.keys.build(buildId)], [`${stage}At`, Date.now()]);
  }

  /**
   * Ends the build; 0 when it had already ended or (with `token`) a newer attempt holds it, else the new fencing
   * token. `eventsTtlMs` bounds how long the Redis copy of the log stays once the object store holds it.
   * Call it through the one ending path (the worker's `endBuild`); the API uses it only to undo a build it failed
   * to queue.
   */
  async finish({ buildId, ref, state, message, retentionMs, eventsTtlMs, logPending = false, token }: BuildFinish): Promise<number> {
    const k = this.keys;
    const res = await runScript(
      this.redis,
      'finish',
      [k.build(buildId), k.events(buildId), k.activeByRef(ref), k.live, k.lastByRef(ref), k.counters, k.eventsNotify(buildId)],
      [buildId, state, message, Math.floor(Date.now() / 1000), retentionMs, eventsTtlMs, logPending ? '1' : '0', token === undefined ? '' : String(token)],
    );
    return Number(res);
  }

  /** The pending log upload succeeded: Logs may read the object now, and Redis may drop its copy soon. */
  async markLogUploaded(buildId: string, eventsTtlMs: number): Promise<void> {
    await this.redis.pipeline().hset(this.keys.build(buildId), 'logPending', '0').pexpire(this.keys.events(buildId), eventsTtlMs).exec();
  }

  /** Reads up to `count` events after `afterId` (exclusive). */
  async readEvents(buildId: string, afterId: string, count: number): Promise<BuildEvent[]> {
    const rows = await this.redis.xrange(this.keys.events(buildId), `(${afterId}`, '+', 'COUNT', count);
    return rows.map(([id, fields]) => parseEvent(id, fields));
  }

  /** Id of the newest event, or `0-0` when the stream is empty. */
  async lastEventId(buildId: string): Promise<string> {
    const rows = await this.redis.xrevrange(this.keys.events(buildId), '+', '-', 'COUNT', 1);
    return rows[0]?.[0] ?? '0-0';
  }

  async eventsExist(buildId: string): Promise<boolean> {
    return (await this.redis.exists(this.keys.events(buildId))) === 1;
  }

  /** Subscribes `pubsub` to the build's notifications: one message after each append to its event stream. */
  async subscribeEvents(pubsub: RedisClient, buildId: string): Promise<void> {
    await pubsub.subscribe(this.keys.eventsNotify(buildId));
  }

  async unsubscribeEvents(pubsub: RedisClient, buildId: string): Promise<void> {
    await pubsub.unsubscribe(this.keys.eventsNotify(buildId));
  }

  /** The build a notification on `channel` (a subscribeEvents channel) is about. */
  buildOfNotification(channel: string): string {
    return channel.slice(channel.lastIndexOf(':') + 1);
  }

  /** Ids the recent index lists (at most RECENT_BUILDS_CAP), newest first; their records may be gone. */
  recentIds(): Promise<string[]> {
    return this.redis.zrevrange(this.keys.recent, 0, -1);
  }

  /** Takes builds whose records are gone out of the recent index. */
  async forgetRecent(ids: readonly string[]): Promise<void> {
    if (ids.length) await this.redis.zrem(this.keys.recent, ...ids);
  }

  /**
   * The reaper's lock for one pass: true when `holder` took it (held for `ttlMs`, whichever process asks), false
   * while another holds it.
   */
  async takeReaperTurn(holder: string, ttlMs: number): Promise<boolean> {
    return (await this.redis.set(this.keys.reaperLock, holder, 'PX', Math.max(1, ttlMs), 'NX')) === 'OK';
  }

  async counters(): Promise<Record<string, number>> {
    const h = await this.redis.hgetall(this.keys.counters);
    return Object.fromEntries(Object.entries(h).map(([k, v]) => [k, Number(v)]));
  }
}

