import type { CacheRefs } from '@imgbuilder/common/cache-refs';
import { formatDuration } from '@imgbuilder/common/duration';
import type { Logger } from '@imgbuilder/common/logger';
import type { RedisClient } from '@imgbuilder/common/redis';
import type { RedisKeys } from '@imgbuilder/common/build-life';

/** How often the installation's cache refs are judged: one registry listing per hour is enough for days of retention. */
export const CACHE_RETENTION_EVERY_MS = 60 * 60_000;

export interface CacheRetentionOptions {
  refs: CacheRefs;
  redis: RedisClient;
  keys: RedisKeys;
  /** IMGBUILDER_CACHE_RETENTION (14d). */
  retentionMs: number;
  log: Logger;
}

/**
 * The layer cache's retention, as one duty of the reaper's pass (so it runs under the reaper's lock, on one worker
 * at a time): at most once per CACHE_RETENTION_EVERY_MS across all workers, cache refs unused for longer than
 * IMGBUILDER_CACHE_RETENTION are deleted from the registry. Only `cache-` tags of the cache repository are looked at.
 */
export function cacheRetentionDuty(o: CacheRetentionOptions): () => Promise<void> {
  return async () => {
    if ((await o.redis.set(o.keys.cacheRetentionDone, '1', 'PX', CACHE_RETENTION_EVERY_MS, 'NX')) !== 'OK') return;
    const deleted = await o.refs.prune(o.retentionMs);
    if (deleted.length) o.log.info({ deleted: deleted.map((r) => r.ref), retention: formatDuration(o.retentionMs) }, 'cache retention deleted unused cache refs');
  };
}
