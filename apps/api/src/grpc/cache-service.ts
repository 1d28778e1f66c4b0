import type { sendUnaryData, Server, ServerUnaryCall } from '@grpc/grpc-js';
import { BuildCacheService, type CacheRef, type ListCacheRefsRequest, type ListCacheRefsResponse, type PruneCacheRequest, type PruneCacheResponse } from '@imgbuilder/proto';
import type { CacheRefInfo, CacheRefs } from '@imgbuilder/common/cache-refs';
import { InvalidRequest } from '@imgbuilder/common/errors';
import type { Logger } from '@imgbuilder/common/logger';
import { toServiceError } from './grpc-status.js';
import { addService, type Guard } from './server.js';

/** The longest `older_than` Prune takes: ten years (a larger number is a mistake, not a retention). */
const MAX_OLDER_THAN_S = 10 * 366 * 86_400;

export interface CacheServiceOptions {
  refs: CacheRefs;
  /** The cache repository (cacheRepositoryOf). */
  repository: string;
  /** IMGBUILDER_CACHE_RETENTION: what Prune uses when the request names no age. */
  retentionMs: number;
  log: Logger;
}

/**
 * `imgbuilder.cache.v1.BuildCache`: the layer cache refs for operators. The API answers rather than the CLI asking
 * the registry itself, because the installation's registry credentials and each ref's last use (Redis) live here;
 * with a tokens file both rpcs need role admin (auth.ts).
 */
export class CacheService {
  constructor(private readonly o: CacheServiceOptions) {}

  register(server: Server, guard?: Guard): void {
    const impl = {
      listCacheRefs: (call: ServerUnaryCall<ListCacheRefsRequest, ListCacheRefsResponse>, cb: sendUnaryData<ListCacheRefsResponse>) =>
        void this.answer(cb, 'ListCacheRefs', async () => ({ repository: this.o.repository, refs: (await this.o.refs.list()).map(toProto) })),
      pruneCache: (call: ServerUnaryCall<PruneCacheRequest, PruneCacheResponse>, cb: sendUnaryData<PruneCacheResponse>) =>
        void this.answer(cb, 'PruneCache', async () => {
          const asked = Number(call.request.olderThanSeconds || 0);
          if (asked > MAX_OLDER_THAN_S) throw new InvalidRequest(`older_than_seconds ${asked} is more than ten years: give the age of the refs to delete, e.g. 604800 for 7 days`);
          const olderThanMs = asked ? asked * 1000 : this.o.retentionMs;
          const deleted = await this.o.refs.prune(olderThanMs);
          this.o.log.info({ deleted: deleted.map((r) => r.ref), olderThanMs }, 'cache prune');
          return { deleted: deleted.map(toProto), olderThanSeconds: String(Math.round(olderThanMs / 1000)) };
        }),
    };
    addService(server, BuildCacheService, impl, guard);
  }

  private async answer<T>(cb: sendUnaryData<T>, rpc: string, fn: () => Promise<T>): Promise<void> {
    try {
      cb(null, await fn());
    } catch (err) {
      cb(toServiceError(err, this.o.log, rpc));
    }
  }
}

function toProto(r: CacheRefInfo): CacheRef {
  return { ref: r.ref, digest: r.digest, size: String(r.bytes), lastUsed: new Date(r.lastUsedAt) };
}
