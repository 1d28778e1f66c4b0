import type { Queue } from 'bullmq';
import type { Env } from '@imgbuilder/common/config';
import { formatDuration } from '@imgbuilder/common/duration';
import type { Logger } from '@imgbuilder/common/logger';
import { describeRedisUrl, type RedisOutage } from '@imgbuilder/common/redis';
import type { BuildRunner } from '../build-runner.js';
import { DiskHygiene } from '../disk-hygiene.js';
import type { WorkerMetrics } from '../metrics.js';
import { Reaper } from '../reaper.js';
import { cacheRetentionDuty } from '../cache-retention.js';
import { endBuild } from '../report/build-ending.js';
import type { DockerEngine } from '../docker-engine.js';
import { NAMESPACE_LABEL } from './engine.js';
import type { WorkerServices } from './services.js';

// What a worker does besides building, each on its own timer.

/** Ends builds whose job is gone or that outlived their deadline (one process of the installation at a time). */
export function startReaper(env: Env, services: WorkerServices, queue: Queue, runner: BuildRunner, log: Logger): Reaper {
  const reaper = new Reaper({
    store: services.store,
    queue,
    end: (r) => endBuild(runner.ending, { ...r, state: 'done_failure' }),
    log,
    intervalMs: env.IMGBUILDER_REAPER_INTERVAL,
    // The API creates the log object (bounded by the store's deadline) before it queues the job.
    enqueueGraceMs: 2 * env.IMGBUILDER_S3_TIMEOUT + 5_000,
    buildTimeoutMs: env.IMGBUILDER_BUILD_TIMEOUT,
    maxQueueWaitMs: env.IMGBUILDER_MAX_QUEUE_WAIT,
    duties: [cacheRetentionDuty({ refs: services.cacheRefs, redis: services.redis, keys: services.keys, retentionMs: env.IMGBUILDER_CACHE_RETENTION, log })],
  });
  reaper.start();
  return reaper;
}

/** A worker cut off from Redis can neither report nor be handed builds: it exits so the supervisor restarts it. */
export function exitWhenRedisStaysAway(env: Env, outage: RedisOutage, log: Logger): void {
  const watchdog = setInterval(() => {
    const down = outage.downForMs();
    if (down > env.IMGBUILDER_REDIS_GIVE_UP) {
      log.fatal({ redis: describeRedisUrl(env.REDIS_URL), downMs: down }, `Redis unreachable for over ${formatDuration(env.IMGBUILDER_REDIS_GIVE_UP)}; exiting so the supervisor restarts this worker`);
      process.exit(3);
    }
  }, 500);
  watchdog.unref();
}

/** Prunes images and build cache unused for IMGBUILDER_PRUNE_AFTER. */
export function startDiskHygiene(env: Env, engine: DockerEngine, services: WorkerServices, metrics: WorkerMetrics, log: Logger): DiskHygiene {
  const hygiene = new DiskHygiene({
    docker: engine.docker,
    store: services.store,
    metrics,
    log,
    olderThanMs: env.IMGBUILDER_PRUNE_AFTER,
    intervalMs: env.IMGBUILDER_PRUNE_INTERVAL,
    buildTimeoutMs: env.IMGBUILDER_BUILD_TIMEOUT,
    ownImagesLabel: `${NAMESPACE_LABEL}=${env.IMGBUILDER_REDIS_NAMESPACE}`,
    images: env.IMGBUILDER_PRUNE_IMAGES,
  });
  hygiene.start();
  return hygiene;
}
