import type { RedisClient } from './redis.js';
import type { RedisKeys } from './redis-keys.js';

/** The terminal message of a cancelled build; waiters, logs and the dashboard all show it. */
export const cancelMessage = (by: string) => `build cancelled by ${by}`;

/** What a cancel request found (CancelRequests.request). */
export type CancelOutcome =
  | { outcome: 'requested'; state: string }
  | { outcome: 'again'; by: string; state: string }
  | { outcome: 'ended'; state: string; message: string }
  | { outcome: 'gone' };

// Records who asked to cancel a live build and tells every worker (the one running it aborts it). A second request
// finds the first's name and publishes again (a worker that missed the first hears it now); an ended build is left
// alone. One script, so a cancel and the build's own end never both win the record.
const REQUEST = `
local h = redis.call('HMGET', KEYS[1], 'state', 'cancelledBy', 'message')
if h[1] == false then return {'gone'} end
local ended = h[1] == 'done_success' or h[1] == 'done_failure'
if h[2] then
  if not ended then redis.call('PUBLISH', KEYS[2], ARGV[3]) end
  return {'again', h[1], h[2]}
end
if ended then return {'ended', h[1], h[3] or ''} end
redis.call('HSET', KEYS[1], 'cancelledBy', ARGV[1], 'cancelAt', ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[3])
return {'requested', h[1]}
`;

/** A message on the cancel channel. */
export interface CancelNotice {
  id: string;
  by: string;
}

/**
 * Cancel requests in Redis: a field on the build's record (who asked) plus a notice on one channel every worker
 * subscribes to. Ending the build stays with the build's one ending path (the worker's, or the API's for a job no
 * worker holds).
 */
export class CancelRequests {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
  ) {}

  async request(buildId: string, by: string): Promise<CancelOutcome> {
    const notice: CancelNotice = { id: buildId, by };
    const res = (await this.redis.eval(REQUEST, 2, this.keys.build(buildId), this.keys.cancelRequests, by, String(Date.now()), JSON.stringify(notice))) as string[];
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
  static async listen(subscriber: RedisClient, keys: RedisKeys, fn: (n: CancelNotice) => void): Promise<void> {
    subscriber.on('message', (channel: string, text: string) => {
      if (channel !== keys.cancelRequests) return;
      try {
        const n = JSON.parse(text) as CancelNotice;
        if (typeof n.id === 'string' && typeof n.by === 'string') fn(n);
      } catch {
        // Not ours: nothing to do.
      }
    });
    await subscriber.subscribe(keys.cancelRequests);
  }
}
