import { randomUUID } from 'node:crypto';
import type { RedisClient } from './redis.js';
import { LogStore, streamFields } from './log-store.js';
import type { RedisKeys } from './redis-keys.js';

/** Lifecycle of a build as stored in Redis. `queued` is reported to clients as `running`. */
export type BuildState = 'queued' | 'running' | 'done_success' | 'done_failure';
export const isTerminal = (s: BuildState | string) => s === 'done_success' || s === 'done_failure';

export interface BuildRecord {
  id: string;
  ref: string;
  baseRef: string;
  state: BuildState;
  /** Unix seconds. */
  startedAt: number;
  message: string;
  /** Object key of the build's log in the log bucket. */
  logKey: string;
  triggeredBy: string;
  finishedAt?: number;
  /** Unix ms: when a worker took the build, when its source was ready and the image build began, when pushing began. */
  runningAt?: number;
  buildAt?: number;
  pushAt?: number;
  /** The object store was down when the build ended: the log lives in Redis until the upload succeeds. */
  logPending: boolean;
  /** Fencing token: bumped by each pick-up and by the end, so only the newest attempt may write. */
  attempt: number;
  /** Unix ms past which the reaper ends the build (queue wait granted plus build timeout). */
  deadlineAt?: number;
  /** W3C traceparent of the span that created the build (empty without tracing): joiners link to it, the dashboard shows it. */
  traceparent?: string;
}

/** One entry of a build's event stream: a log chunk or a state change. */
export type BuildEvent =
  | { id: string; kind: 'log'; text: string; /** Byte offset of `text` in the whole log (Redis holds only a tail). */ offset?: number }
  | { id: string; kind: 'state'; state: BuildState; message: string; /** Read from the record: the stream had expired. */ streamGone?: true };

// Creates the build of a ref unless one is already queued or running; returns {created, id}.
// The active key's TTL is a safety net only: the worker deletes it when the build ends.
const CREATE_OR_JOIN = `
local existing = redis.call('GET', KEYS[1])
if existing and redis.call('EXISTS', ARGV[9] .. existing) == 1 then
  redis.call('HINCRBY', KEYS[5], 'deduplicated', 1)
  return {0, existing}
end
local id = ARGV[1]
redis.call('HSET', KEYS[2], 'id', id, 'ref', ARGV[2], 'baseRef', ARGV[3], 'state', 'queued', 'startedAt', ARGV[4],
  'message', '', 'logKey', ARGV[5], 'triggeredBy', ARGV[6], 'attempt', 0, 'deadlineAt', ARGV[10], 'traceparent', ARGV[12])
redis.call('SET', KEYS[1], id, 'PX', ARGV[7])
redis.call('SET', KEYS[3], id, 'PX', ARGV[8])
redis.call('ZADD', KEYS[4], ARGV[4], id)
redis.call('HINCRBY', KEYS[5], 'started', 1)
redis.call('ZADD', KEYS[6], ARGV[4], id)
redis.call('ZREMRANGEBYRANK', KEYS[6], 0, -1 - tonumber(ARGV[11]))
return {1, id}
`;

// Ends a build once: records the terminal state, appends it to the event stream, releases the ref's dedupe
// lock (only if it is still ours), drops the build from the live set and starts the retention clock. A fenced
// caller (ARGV[8], the attempt's token) ends it only if no newer attempt took over. Bumps the token, so no
// attempt writes after the end; returns the new token (the ender's right to upload a pending log), or 0.
const FINISH = `
local h = redis.call('HMGET', KEYS[1], 'state', 'attempt')
local state = h[1]
if state == false then return 0 end
if state == 'done_success' or state == 'done_failure' then return 0 end
if ARGV[8] ~= '' and (h[2] or '0') ~= ARGV[8] then return 0 end
local token = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'message', ARGV[3], 'finishedAt', ARGV[4], 'logPending', ARGV[7])
redis.call('XADD', KEYS[2], '*', 's', ARGV[2], 'm', ARGV[3])
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('SET', KEYS[5], ARGV[1], 'PX', ARGV[5])
redis.call('HINCRBY', KEYS[6], ARGV[2], 1)
redis.call('PUBLISH', KEYS[7], ARGV[2])
return token
`;

// A worker takes the build: unless it has ended, it becomes 'running' under a new fencing token (returned; 0 when
// the build is gone or over) and gets the deadline the reaper enforces.
const CLAIM = `
local state = redis.call('HGET', KEYS[1], 'state')
if state == false or state == 'done_success' or state == 'done_failure' then return 0 end
local token = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'state', 'running', 'deadlineAt', ARGV[1], 'runningAt', ARGV[2])
redis.call('HDEL', KEYS[1], 'buildAt', 'pushAt')
redis.call('XADD', KEYS[2], '*', 's', 'running', 'm', '')
redis.call('PUBLISH', KEYS[3], 's')
return token
`;

// Keeps the ref's dedupe lock for as long as its build lives (only if the lock is still this build's).
const EXTEND_LOCK = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`;

const MARK_STAGE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) end
return 0
`;

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
  state: 'done_success' | 'done_failure';
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
    readonly keys: RedisKeys,
  ) {}

  /** Starts a build of `ref`, or joins the one already queued or running. */
  async createOrJoin(input: CreateBuildInput): Promise<{ created: boolean; id: string }> {
    const id = randomUUID();
    const res = (await this.redis.eval(
      CREATE_OR_JOIN,
      6,
      this.keys.activeByRef(input.ref),
      this.keys.build(id),
      this.keys.lastByRef(input.ref),
      this.keys.live,
      this.keys.counters,
      this.keys.recent,
      id,
      input.ref,
      input.baseRef,
      String(Math.floor(Date.now() / 1000)),
      LogStore.objectKey(id),
      input.triggeredBy,
      String(input.lockTtlMs),
      String(input.retentionMs),
      // The joined build's hash shares the hash tag, so it lives in the same Cluster slot as the declared keys.
      this.keys.build(''),
      String(input.deadlineAt),
      String(RECENT_BUILDS_CAP),
      input.traceparent ?? '',
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
    return Number(await this.redis.eval(CLAIM, 3, this.keys.build(buildId), this.keys.events(buildId), this.keys.eventsNotify(buildId), String(deadlineAt), String(Date.now())));
  }

  /** Makes the dedupe lock last `ttlMs` longer, if it is still this build's (refreshed while the build lives). */
  async extendLock(ref: string, buildId: string, ttlMs: number): Promise<void> {
    await this.redis.eval(EXTEND_LOCK, 1, this.keys.activeByRef(ref), buildId, String(ttlMs));
  }

  /** Notes when a stage began (the dashboard's stage timings); the first mark of an attempt wins. */
  async markStage(buildId: string, stage: 'build' | 'push'): Promise<void> {
    // Never recreates a record that is gone (expired or lost): that hash would have no TTL.
    await this.redis.eval(MARK_STAGE, 1, this.keys.build(buildId), `${stage}At`, String(Date.now()));
  }

  /**
   * Ends the build; 0 when it had already ended or (with `token`) a newer attempt holds it, else the new fencing
   * token. `eventsTtlMs` bounds how long the Redis copy of the log stays once the object store holds it.
   * Call it through the one ending path (the worker's `endBuild`); the API uses it only to undo a build it failed
   * to queue.
   */
  async finish({ buildId, ref, state, message, retentionMs, eventsTtlMs, logPending = false, token }: BuildFinish): Promise<number> {
    const res = await this.redis.eval(
      FINISH,
      7,
      this.keys.build(buildId),
      this.keys.events(buildId),
      this.keys.activeByRef(ref),
      this.keys.live,
      this.keys.lastByRef(ref),
      this.keys.counters,
      this.keys.eventsNotify(buildId),
      buildId,
      state,
      message,
      String(Math.floor(Date.now() / 1000)),
      String(retentionMs),
      String(eventsTtlMs),
      logPending ? '1' : '0',
      token === undefined ? '' : String(token),
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

  async counters(): Promise<Record<string, number>> {
    const h = await this.redis.hgetall(this.keys.counters);
    return Object.fromEntries(Object.entries(h).map(([k, v]) => [k, Number(v)]));
  }
}

function parseEvent(id: string, fields: string[]): BuildEvent {
  const f = streamFields(fields);
  if (f.l !== undefined) return { id, kind: 'log', text: f.l, offset: f.o === undefined ? undefined : Number(f.o) };
  return { id, kind: 'state', state: f.s as BuildState, message: f.m ?? '' };
}

/** A build record from its Redis hash (HGETALL). */
function toRecord(h: Record<string, string>): BuildRecord {
  return {
    id: h.id,
    ref: h.ref,
    baseRef: h.baseRef,
    state: h.state as BuildState,
    startedAt: Number(h.startedAt),
    message: h.message ?? '',
    logKey: h.logKey,
    triggeredBy: h.triggeredBy ?? '',
    finishedAt: h.finishedAt ? Number(h.finishedAt) : undefined,
    logPending: h.logPending === '1',
    runningAt: h.runningAt ? Number(h.runningAt) : undefined,
    buildAt: h.buildAt ? Number(h.buildAt) : undefined,
    pushAt: h.pushAt ? Number(h.pushAt) : undefined,
    attempt: Number(h.attempt ?? 0),
    deadlineAt: h.deadlineAt ? Number(h.deadlineAt) : undefined,
    traceparent: h.traceparent || undefined,
  };
}

/** Orders Redis stream ids (`ms-seq`). */
export function compareStreamIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(Number);
  const [bm, bs] = b.split('-').map(Number);
  return am !== bm ? am - bm : (as ?? 0) - (bs ?? 0);
}
