import type { Logger } from '@imgbuilder/common/logger';
import { watchOutage, type RedisClient, type RedisOutage } from '@imgbuilder/common/redis';
import { BuildStore, LogStore, type RedisKeys } from '@imgbuilder/common/build-life';
import type { ProcessConfig, RedisConnector } from '@imgbuilder/common/process-config';
import { ObjectStore, objectStoreOptions } from '@imgbuilder/common/object-store';
import { RegistryClient } from '@imgbuilder/common/registry-client';
import type { CredentialTable } from '@imgbuilder/common/registry-auth';
import type { SecretBox } from '@imgbuilder/common/secret-box';
import { CacheRefs } from '@imgbuilder/common/cache-refs';
import { cacheRepositoryOf } from '@imgbuilder/common/config';
import { pushCredentials } from '@imgbuilder/common/registry-auth';

/** What a worker talks to besides the engine: Redis (build state, logs, the queue), the object store, registries. */
export interface WorkerServices {
  connectRedis: RedisConnector;
  redis: RedisClient;
  outage: RedisOutage;
  keys: RedisKeys;
  store: BuildStore;
  logs: LogStore;
  objects: ObjectStore;
  registry: RegistryClient;
  /** The installation's registry credentials (IMGBUILDER_REGISTRY_AUTH_FILE). */
  installation: CredentialTable;
  secrets: SecretBox;
  /** The layer cache refs (cacheRepositoryOf) and when each was last used. */
  cacheRefs: CacheRefs;
}

/** Files and keys were read by loadProcessConfig, so a bad one stopped the worker before it connected anywhere. */
export function connectServices({ env, connectRedis, installation, secrets, keys }: ProcessConfig, log: Logger): WorkerServices {
  // Waits through a Redis restart instead of failing a build's bookkeeping; the Redis watchdog (upkeep.ts) bounds the wait.
  const redis = connectRedis('imgbuilder-worker', { blocking: true });
  redis.on('error', (err) => log.warn({ err: err.message }, 'redis connection error'));
  const objects = new ObjectStore(objectStoreOptions(env));
  objects.ensureBucket().catch((err: Error) => log.warn({ err: err.message }, 'object store not reachable yet'));
  const registry = new RegistryClient({ insecureHosts: env.IMGBUILDER_INSECURE_REGISTRIES });
  const cacheRepository = cacheRepositoryOf(env);
  return {
    connectRedis,
    redis,
    outage: watchOutage(redis),
    keys,
    store: new BuildStore(redis, keys),
    logs: new LogStore(redis, keys, objects),
    objects,
    registry,
    installation,
    secrets,
    cacheRefs: new CacheRefs({ redis, keys, registry, repository: cacheRepository, credentials: pushCredentials(installation, cacheRepository) }),
  };
}
