import type { RedisClient } from '../redis.js';
import type { RedisKeys } from './redis-keys.js';
import { runScript } from './scripts.js';

/** What a cancel request found (CancelRequests.request). */
export type CancelOutcome =
  | { outcome: 'requested'; state: string }
  | { outcome: 'again'; by: string; state: string }
  | { outcome: 'ended'; state: string; message: string }
  | { outcome: 'gone' };

/** A message on the cancel channel. */
export interface CancelNotice {
  id: string;
  by: string;
}

/**
 * Cancel requests in Redis: a field on the build's record (who asked) plus a notice on one channel every worker
 * subscribes to (lua/cancel-request-2.lua). Ending the build stays with the build's one ending path (the worker's, or
 * the API's for a job no worker holds).
 */
export class CancelRequests {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {}

  async request(buildId: string, by: string): Promise<CancelOutcome> {
    const notice: CancelNotice = { id: buildId, by };
    const res = (await runScript(this.redis, 'cancel-request', [this.keys.build(buildId), this.keys.cancelRequests], [by, Date.now(), JSON.stringify(notice)])) as string[];
    switch (res[0]) {
      case 'requested':
        return { outcome: 'requested', state: res[1] };
      case 'again':
        return { outcome: 'again', state: res[1], by: res[2] };
      case 'ended':
        return { outcome: 'ended', state: res[1], message: res[2] };
      default:
        return { outcome: 'gone' };
    }
  }

  /** Who asked to cancel the build, if anyone did. */
  async requestedBy(buildId: string): Promise<string | undefined> {
    return (await this.redis.hget(this.keys.build(buildId), 'cancelledBy')) ?? undefined;
  }

  /** Calls `fn` for each cancel notice on `subscriber` (a connection of its own, left in subscribe mode). */
  async listen(subscriber: RedisClient, fn: (n: CancelNotice) => void): Promise<void> {
    const channel = this.keys.cancelRequests;
    subscriber.on('message', (from: string, text: string) => {
      if (from !== channel) return;
      try {
        const n = JSON.parse(text) as CancelNotice;
        if (typeof n.id === 'string' && typeof n.by === 'string') fn(n);
      } catch {
        // Not ours: nothing to do.
      }
    });
    await subscriber.subscribe(channel);
  }
}
