import { parseImageRef, type ImageRef } from './image-ref.js';
import type { RedisClient } from './redis.js';
import type { RedisKeys } from './build-life/index.js';
import type { RegistryCredentials } from './registry-auth.js';
import type { RegistryClient } from './registry-client.js';

/** Every layer-cache ref is a tag starting with this in the cache repository; no other tag is ever touched. */
export const CACHE_TAG_PREFIX = 'cache-';

/** One cache ref as `imgbuilder cache ls` shows it. */
export interface CacheRefInfo {
  ref: string;
  digest: string;
  /** Config and layer bytes its manifest names (layers shared with other images count in full). */
  bytes: number;
  /** When a build last imported or pushed it (ms since the epoch). */
  lastUsedAt: number;
}

export interface CacheRefsOptions {
  redis: RedisClient;
  keys: RedisKeys;
  registry: RegistryClient;
  /** The cache repository (IMGBUILDER_CACHE_REPOSITORY): the only repository read or written. */
  repository: string;
  /** The installation's credentials for it: the only ones that ever write or delete a cache ref. */
  credentials?: RegistryCredentials;
  /** The clock retention judges by; tests inject one. */
  now?: () => number;
}

/**
 * The layer-cache refs of one installation: when each was last used (a Redis hash by tag, written by the workers at
 * each import and push) and their retention. A ref unused for longer than the retention is deleted from the registry
 * by its manifest digest; the registry's garbage collection frees the blobs later. The registry deletes manifests,
 * not tags, so a ref sharing its manifest with a ref still in use (or with any tag not a cache ref's) stays.
 */
export class CacheRefs {
  private readonly repo: ImageRef;
  readonly now: () => number;

  constructor(private readonly opts: CacheRefsOptions) {
    this.repo = parseImageRef(`${opts.repository}:${CACHE_TAG_PREFIX}x`);
    this.now = opts.now ?? Date.now;
  }

  /** Records that builds used these refs now. */
  async touch(refs: string[]): Promise<void> {
    const tags = refs.map((r) => parseImageRef(r).tag).filter((t): t is string => !!t?.startsWith(CACHE_TAG_PREFIX));
    if (!tags.length) return;
    const now = String(this.now());
    await this.opts.redis.hset(this.opts.keys.cacheLastUse, Object.fromEntries(tags.map((t) => [t, now])));
  }

  /**
   * Every cache ref in the registry with its size and last use, least recently used first. A ref with no recorded
   * use (written before uses were recorded, or Redis lost it) counts as used now, so it gets a whole retention period.
   */
  async list(): Promise<CacheRefInfo[]> {
    return (await this.scan()).refs;
  }

  /** The cache refs, and the digests of any other tag of the repository (those are never deleted). */
  private async scan(): Promise<{ refs: CacheRefInfo[]; others: Set<string> }> {
    const { registry, credentials, redis, keys } = this.opts;
    const all = await registry.tags(this.repo, { credentials });
    const tags = all.filter((t) => t.startsWith(CACHE_TAG_PREFIX));
    const others = new Set<string>();
    for (const tag of all.filter((t) => !t.startsWith(CACHE_TAG_PREFIX))) others.add(await registry.resolveDigest({ ...this.repo, tag }, { credentials }));
    const used = tags.length ? await redis.hmget(keys.cacheLastUse, ...tags) : [];
    const unknown: Record<string, string> = {};
    const now = this.now();
    const refs: CacheRefInfo[] = [];
    for (const [i, tag] of tags.entries()) {
      let m;
      try {
        m = await registry.manifestSize({ ...this.repo, tag }, { credentials });
      } catch {
        continue; // Deleted meanwhile (or unreadable): nothing to show or delete.
      }
      const lastUsedAt = used[i] ? Number(used[i]) : now;
      if (!used[i]) unknown[tag] = String(now);
      refs.push({ ref: `${this.opts.repository}:${tag}`, digest: m.digest, bytes: m.bytes, lastUsedAt });
    }
    if (Object.keys(unknown).length) await redis.hset(keys.cacheLastUse, unknown);
    return { refs: refs.sort((a, b) => a.lastUsedAt - b.lastUsedAt), others };
  }

  /** Deletes the refs unused for longer than `olderThanMs`; returns those deleted. */
  async prune(olderThanMs: number): Promise<CacheRefInfo[]> {
    const { refs, others } = await this.scan();
    const cutoff = this.now() - olderThanMs;
    const expired = (r: CacheRefInfo) => r.lastUsedAt < cutoff;
    const live = new Set([...others, ...refs.filter((r) => !expired(r)).map((r) => r.digest)]);
    const deleted: CacheRefInfo[] = [];
    const done = new Set<string>();
    for (const r of refs.filter(expired)) {
      if (live.has(r.digest)) continue;
      if (!done.has(r.digest)) await this.opts.registry.deleteManifest(this.repo, r.digest, { credentials: this.opts.credentials });
      done.add(r.digest);
      deleted.push(r);
    }
    if (deleted.length) await this.opts.redis.hdel(this.opts.keys.cacheLastUse, ...deleted.map((r) => parseImageRef(r.ref).tag!));
    return deleted;
  }
}
