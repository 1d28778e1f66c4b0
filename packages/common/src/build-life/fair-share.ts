import { createHash } from 'node:crypto';
import type { RedisClient } from '../redis.js';
import type { RedisKeys } from './redis-keys.js';
import { runScript } from './scripts.js';

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

/**
 * Round-robin across callers from what BullMQ's open-source edition has: priorities. A build's priority is its rank
 * in its caller's own line (1 + that caller's builds already queued or running), and BullMQ hands out the lowest
 * priority first, FIFO among equals. So every caller's first build goes before anyone's second: a caller's burst
 * of 12 takes ranks 1–12 and a second caller's single build, rank 1, is next. A caller is the build's attributed
 * triggered_by (the API's one caller identity, apps/api/src/grpc/caller.ts: `<token>/<triggered_by>` with tokens),
 * as its job and record carry it. A joined build stays in its creator's line.
 */
export class FairShare {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
    /** How long a caller's sets outlive its last build (fairShareTtlMs). */
    private readonly ttlMs: number,
  ) {}

  /** The caller's builds now waiting for a slot, and queued or running. */
  async count(caller: string): Promise<{ queued: number; live: number }> {
    const [queued, live] = (await runScript(this.redis, 'fair-count', [this.keys.callerBuilds(hashCaller(caller))], [this.keys.build('')])) as [number, number];
    return { queued, live };
  }

  /** Puts a new build in its caller's line; returns its BullMQ priority. */
  async enqueue(buildId: string, caller: string): Promise<number> {
    const rank = Number(await runScript(this.redis, 'fair-enqueue', [this.keys.callerBuilds(hashCaller(caller))], [this.keys.build(''), buildId, Date.now(), this.ttlMs]));
    return Math.min(Math.max(1, rank), MAX_PRIORITY);
  }

  /** Whether a worker may run `buildId` now with its caller at no more than `max` running builds. */
  async takeSlot(buildId: string, caller: string, max: number): Promise<boolean> {
    return (await runScript(this.redis, 'fair-take-slot', [this.keys.callerRunning(hashCaller(caller))], [buildId, max, this.keys.build(''), this.ttlMs])) === 1;
  }
}

/** Callers are free text (triggered_by); keys get a fixed-size name. */
function hashCaller(caller: string): string {
  return createHash('sha256').update(caller).digest('hex').slice(0, 32);
}
