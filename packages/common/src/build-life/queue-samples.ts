import type { RedisClient } from '../redis.js';
import type { RedisKeys } from './redis-keys.js';

const HOUR_MS = 3_600_000;

/** One pod's look at the build queue at one time. */
export interface QueueSample {
  /** Unix ms. */
  at: number;
  queued: number;
  running: number;
}

/**
 * Queue-depth samples of the last hour, for the dashboard's chart (each API pod adds its own; older ones are trimmed
 * on every write, so the set stays bounded).
 */
export class QueueSamples {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {}

  async add(s: QueueSample, pod: string): Promise<void> {
    await this.redis
      .pipeline()
      .zadd(this.keys.queueSamples, s.at, `${s.at}:${s.queued}:${s.running}:${pod}`)
      .zremrangebyscore(this.keys.queueSamples, '-inf', s.at - HOUR_MS)
      .exec();
  }

  /** Every pod's samples from `fromMs` (unix ms) on. */
  async since(fromMs: number): Promise<QueueSample[]> {
    return (await this.redis.zrangebyscore(this.keys.queueSamples, fromMs, '+inf')).map((m) => {
      const [at, queued, running] = m.split(':').map(Number);
      return { at, queued, running };
    });
  }
}
