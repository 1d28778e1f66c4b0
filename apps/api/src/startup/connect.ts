import { Queue } from 'bullmq';
import { formatDuration } from '@imgbuilder/common/duration';
import type { Logger } from '@imgbuilder/common/logger';
import { watchOutage, type RedisClient } from '@imgbuilder/common/redis';
import { QUEUE_NAME, BuildStore, LogStore } from '@imgbuilder/common/build-life';
import { ObjectStore, objectStoreOptions } from '@imgbuilder/common/object-store';
import type { BuildJobData } from '@imgbuilder/common/build-job';
import { ApiMetrics } from '../metrics.js';
import { EventHub } from '../logs/event-hub.js';
import type { ApiConfig } from './config.js';

/** Redis, the build queue and the object store, and what reads and writes builds through them. */
export interface Backends {
  redis: RedisClient;
  /** Blocking reads and subscriptions get a connection of their own. */
  pubsub: RedisClient;
  queue: Queue<BuildJobData>;
  store: BuildStore;
  logStore: LogStore;
  objects: ObjectStore;
  hub: EventHub;
  metrics: ApiMetrics;
  /** Whether the API can serve: Redis answers (readiness of health checks). */
  ready: () => Promise<boolean>;
}

/** Opens the connections (they connect in the background and reconnect by themselves). */
export function connect({ env, keys, connectRedis }: ApiConfig, log: Logger): Backends {
  const redis = connectRedis('imgbuilder-api');
  const pubsub = connectRedis('imgbuilder-api-sub', { blocking: true });
  redis.on('error', (err) => log.warn({ err: err.message }, 'redis connection error'));
  pubsub.on('error', (err) => log.warn({ err: err.message }, 'redis subscriber error'));
  const queue = new Queue<BuildJobData>(QUEUE_NAME, { connection: connectRedis('imgbuilder-api-queue'), prefix: keys.queuePrefix });
  queue.on('error', (err) => log.warn({ err: err.message }, 'queue error'));

  const store = new BuildStore(redis, keys);
  const outage = watchOutage(redis);
  const metrics = new ApiMetrics(queue);
  // Open streams wait through a Redis restart, but not for ever: past the give-up they end UNAVAILABLE (retryable).
  const hub = new EventHub(store, pubsub, {
    onLive: (batch) => metrics.logsRead(batch),
    unavailable: () =>
      outage.downForMs() > env.IMGBUILDER_REDIS_GIVE_UP ? `the build queue (Redis) has been unreachable for over ${formatDuration(env.IMGBUILDER_REDIS_GIVE_UP)}; retry` : undefined,
  });
  const objects = new ObjectStore(objectStoreOptions(env));
  const logStore = new LogStore(redis, keys, objects);
  objects.ensureBucket().catch((err: Error) => log.warn({ err: err.message }, 'object store not reachable yet; log URLs will be presigned anyway'));
  const ready = async () => (await redis.ping()) === 'PONG';
  return { redis, pubsub, queue, store, logStore, objects, hub, metrics, ready };
}
