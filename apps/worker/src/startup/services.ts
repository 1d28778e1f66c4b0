import type { Env } from '@imgbuilder/common/config';
import type { Logger } from '@imgbuilder/common/logger';
import { redisConnector, watchOutage, type RedisClient, type RedisOutage } from '@imgbuilder/common/redis';
import { redisKeys, type RedisKeys } from '@imgbuilder/common/redis-keys';
import { BuildStore } from '@imgbuilder/common/build-store';
import { LogStore } from '@imgbuilder/common/log-store';
import { ObjectStore, objectStoreOptions } from '@imgbuilder/common/object-store';
import { RegistryClient } from '@imgbuilder/common/registry-client';
import { loadCredentialFile, type CredentialTable } from '@imgbuilder/common/registry-auth';
import { SecretBox } from '@imgbuilder/common/secret-box';

/** What a worker talks to besides the engine: Redis (build state, logs, the queue), the object store, registries. */
export interface WorkerServices {
  connectRedis: ReturnType<typeof redisConnector>;
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
}

export function connectServices(env: Env, log: Logger): WorkerServices {
  const connectRedis = redisConnector(env.REDIS_URL, env.IMGBUILDER_REDIS_TLS_CA);
  // Files and keys first: a bad one stops the worker before it connects anywhere.
  const installation = loadCredentialFile(env.IMGBUILDER_REGISTRY_AUTH_FILE);
  const secrets = SecretBox.fromKey(env.IMGBUILDER_SECRET_KEY);
  const keys = redisKeys(env.IMGBUILDER_REDIS_NAMESPACE);
  // Waits through a Redis restart instead of failing a build's bookkeeping; the Redis watchdog (upkeep.ts) bounds the wait.
  const redis = connectRedis('imgbuilder-worker', { blocking: true });
  redis.on('error', (err) => log.warn({ err: err.message }, 'redis connection error'));
  const objects = new ObjectStore(objectStoreOptions(env));
  objects.ensureBucket().catch((err: Error) => log.warn({ err: err.message }, 'object store not reachable yet'));
  return {
    connectRedis,
    redis,
    outage: watchOutage(redis),
    keys,
    store: new BuildStore(redis, keys),
    logs: new LogStore(redis, keys, objects),
    objects,
    registry: new RegistryClient({ insecureHosts: env.IMGBUILDER_INSECURE_REGISTRIES }),
    installation,
    secrets,
  };
}
