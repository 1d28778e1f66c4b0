import { LRUCache } from 'lru-cache';

/** A presigned URL is handed out again for this share of its lifetime, so each one a client gets has most of it left. */
const REUSE_SHARE = 0.1;
const MAX_REUSE_MS = 60_000;

/**
 * Presigned log URLs, one per build reused for a while by every message that names it (Build streams' `running`
 * and terminal messages, ListBuilds): when a build ends, its 2,000 Build streams cost one signature, not 2,000
 * (each one a round of the AWS SDK's middleware, and its garbage, at the same moment). Concurrent asks for one
 * log share one signing.
 */
export class PresignedLogUrls {
  private readonly cache: LRUCache<string, string>;

  constructor(presign: (logKey: string, ttlMs: number) => Promise<string>, ttlMs: number) {
    this.cache = new LRUCache<string, string>({
      max: 10_000,
      ttl: Math.max(1, Math.min(ttlMs * REUSE_SHARE, MAX_REUSE_MS)),
      fetchMethod: (logKey) => presign(logKey, ttlMs),
    });
  }

  async get(logKey: string): Promise<string> {
    const url = await this.cache.fetch(logKey);
    if (url === undefined) throw new Error('presigning the log URL returned nothing');
    return url;
  }
}
