import { createHash } from 'node:crypto';
import type { RedisClient } from './redis.js';
import type { RedisKeys } from './redis-keys.js';

/**
 * Every BullMQ state a build wanting a worker slot can be in, whatever fair share did with it: `prioritized` (every
 * build gets a priority, below), `waiting` (jobs of older APIs), `delayed` (deferred by the per-caller running limit,
 * or handed back at shutdown) and `active`. The scaling signal counts exactly these (imgbuilder_queue_demand).
 */
export const DEMAND_STATES = ['waiting', 'prioritized', 'delayed', 'active'] as const;

/** BullMQ's largest priority (2^21); a caller deeper in the queue than this keeps the last rank. */
const MAX_PRIORITY = 2 ** 21;

/** How long a deferred build (its caller at IMGBUILDER_MAX_RUNNING_PER_CALLER) waits before a worker looks again. */
export const DEFER_MS = 1_000;

// Drops from a caller's set the builds that are no longer queued or running (ended, expired), so no path that ends
// a build has to remember the set; then counts what is left. Returns {queued, live}.
const COUNT = `
local function count(set, prefix)
  local queued, live = 0, 0
  for _, id in ipairs(redis.call('ZRANGE', set, 0, -1)) do
    local st = redis.call('HGET', prefix .. id, 'state')
    if st == 'queued' then queued = queued + 1; live = live + 1
    elseif st == 'running' then live = live + 1
    else redis.call('ZREM', set, id) end
  end
  return queued, live
end
`;

const QUEUED = `${COUNT}
local queued, live = count(KEYS[1], ARGV[1])
return {queued, live}
`;

// A new build joins its caller's set; its rank is 1 + the caller's builds queued or running before it. The
// record remembers its caller (who may cancel it).
const ENQUEUE = `${COUNT}
local queued, live = count(KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'caller', ARGV[5]) end
return live + 1
`;

// A worker may run the build if its caller holds fewer than ARGV[2] slots (a build keeps its slot across pick-ups).
const TAKE_SLOT = `
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local st = redis.call('HGET', ARGV[3] .. id, 'state')
  if st == 'queued' or st == 'running' then n = n + 1 else redis.call('SREM', KEYS[1], id) end
end
if n >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`;

/**
 * Round-robin across callers from what BullMQ's open-source edition has: priorities. A build's priority is its rank
 * in its caller's own line (1 + that caller's builds already queued or running), and BullMQ hands out the lowest
 * priority first, FIFO among equals. So every caller's first build goes before anyone's second: a caller's burst
 * of 12 takes ranks 1–12 and a second caller's single build, rank 1, is next. A caller is callerOf(job): the token's
 * name plus triggered_by. A joined build stays in its creator's line.
 */
export class FairShare {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
    /** How long a caller's sets outlive its last build (queue wait plus build timeout). */
    private readonly ttlMs: number,
  ) {}

  /** The caller's builds now waiting for a slot, and queued or running. */
  async count(caller: string): Promise<{ queued: number; live: number }> {
    const [queued, live] = (await this.redis.eval(QUEUED, 1, this.keys.callerBuilds(hashCaller(caller)), this.keys.build(''))) as [number, number];
    return { queued, live };
  }

  /** Puts a new build in its caller's line; returns its BullMQ priority. */
  async enqueue(buildId: string, caller: string): Promise<number> {
    const rank = Number(
      await this.redis.eval(ENQUEUE, 2, this.keys.callerBuilds(hashCaller(caller)), this.keys.build(buildId), this.keys.build(''), buildId, String(Date.now()), String(this.ttlMs), caller),
    );
    return Math.min(Math.max(1, rank), MAX_PRIORITY);
  }

  /** Whether a worker may run `buildId` now with its caller at no more than `max` running builds. */
  async takeSlot(buildId: string, caller: string, max: number): Promise<boolean> {
    return (await this.redis.eval(TAKE_SLOT, 1, this.keys.callerRunning(hashCaller(caller)), buildId, String(max), this.keys.build(''), String(this.ttlMs))) === 1;
  }

  /** The caller a build was queued for (callerOf of its job), as the record keeps it. */
  async callerOfBuild(buildId: string): Promise<string | undefined> {
    return (await this.redis.hget(this.keys.build(buildId), 'caller')) ?? undefined;
  }
}

/** Callers are free text (triggered_by); keys get a fixed-size name. */
function hashCaller(caller: string): string {
  return createHash('sha256').update(caller).digest('hex').slice(0, 32);
}
