import { DelayedError, Worker, type Job } from 'bullmq';
import { loadEnv, ConfigError } from '@imgbuilder/common/config';
import { createLogger } from '@imgbuilder/common/logger';
import { createRedis, describeRedisUrl } from '@imgbuilder/common/redis';
import { QUEUE_NAME, QUEUE_PREFIX } from '@imgbuilder/common/redis-keys';
import { BuildStore, isTerminal } from '@imgbuilder/common/build-store';
import { RegistryClient } from '@imgbuilder/common/registry-client';
import { loadCredentialFile } from '@imgbuilder/common/registry-auth';
import { ObjectStore } from '@imgbuilder/common/object-store';
import { SecretBox } from '@imgbuilder/common/secret-box';
import { startHealthServer } from '@imgbuilder/common/health-server';
import type { BuildJobData } from '@imgbuilder/common/build-job';
import { BuildRunner } from './build-runner.js';
import { createDocker, DockerEngine } from './docker-engine.js';
import { WorkerMetrics } from './metrics.js';
import { DiskHygiene } from './disk-hygiene.js';

const log = createLogger('imgbuilder-worker');
/** A worker that cannot reach Redis this long exits non-zero so its supervisor restarts it. */
const REDIS_GIVE_UP_MS = 60_000;

async function main(): Promise<void> {
  const env = loadEnv();
  const installation = loadCredentialFile(env.IMGBUILDER_REGISTRY_AUTH_FILE);
  const secrets = SecretBox.fromEnv(env.IMGBUILDER_SECRET_KEY, env.NODE_ENV);
  const redis = createRedis(env.REDIS_URL, { name: 'imgbuilder-worker' });
  redis.on('error', (err) => log.warn({ err: err.message }, 'redis connection error'));
  const store = new BuildStore(redis);
  const objects = new ObjectStore(env);
  objects.ensureBucket().catch((err: Error) => log.warn({ err: err.message }, 'object store not reachable yet'));
  const engine = new DockerEngine(createDocker(env.DOCKER_HOST), env.DOCKER_HOST);
  const metrics = new WorkerMetrics();
  const runner = new BuildRunner({ env, store, objects, registry: new RegistryClient({ insecureHosts: env.IMGBUILDER_INSECURE_REGISTRIES }), engine, secrets, installation, metrics, log });

  const running = new Map<string, AbortController>();
  const process_ = async (job: Job<BuildJobData>, token?: string): Promise<void> => {
    const ctl = new AbortController();
    running.set(job.id!, ctl);
    metrics.active.inc();
    try {
      const restarted = (job.stalledCounter ?? 0) > 0 || (job.attemptsStarted ?? 1) > 1 || (await store.get(job.data.buildId))?.state === 'running';
      if (restarted) metrics.restarted.inc();
      await runner.run(job.data, ctl.signal, { restarted });
    } catch (err) {
      if (ctl.signal.aborted && token) {
        // Graceful shutdown ran out of grace: hand the job back for another worker.
        await job.moveToDelayed(Date.now(), token);
        throw new DelayedError();
      }
      throw err;
    } finally {
      running.delete(job.id!);
      metrics.active.dec();
    }
  };

  const worker = new Worker<BuildJobData>(QUEUE_NAME, process_, {
    connection: createRedis(env.REDIS_URL, { name: 'imgbuilder-worker-bull', blocking: true }),
    prefix: QUEUE_PREFIX,
    concurrency: env.IMGBUILDER_WORKER_CONCURRENCY,
    // A killed worker stops renewing its lock; after lockDuration the next stalled check hands the job on.
    lockDuration: env.IMGBUILDER_WORKER_LOCK_TIMEOUT,
    stalledInterval: env.IMGBUILDER_STALLED_CHECK_INTERVAL,
    maxStalledCount: env.IMGBUILDER_MAX_BUILD_RESTARTS,
    removeOnComplete: { count: 0 },
    removeOnFail: { count: 0 },
  });
  worker.on('error', (err) => log.warn({ err: err.message }, 'worker error'));
  worker.on('failed', (job, err) => {
    if (!job) return;
    // Jobs failed by BullMQ itself (stalled too often) never reached our runner's terminal state: end them here.
    void (async () => {
      const rec = await store.get(job.data.buildId);
      if (!rec || isTerminal(rec.state)) return;
      const why = /stalled/i.test(err.message)
        ? `build failed: its worker stopped responding ${env.IMGBUILDER_MAX_BUILD_RESTARTS + 1} times (killed or out of memory?)`
        : `build failed: ${err.message}`;
      await store.appendLog(job.data.buildId, `[imgbuilder] ${why}\n`);
      await store.finish(job.data.buildId, job.data.ref, 'done_failure', why, env.IMGBUILDER_LOG_RETENTION, env.IMGBUILDER_LOG_RETENTION);
      metrics.done.inc({ outcome: 'failure' });
    })().catch((e: Error) => log.error({ err: e.message, build_id: job.data.buildId }, 'could not record failed build'));
  });

  let redisDownSince: number | undefined;
  const watchdog = setInterval(() => {
    const up = redis.status === 'ready';
    if (up) redisDownSince = undefined;
    else redisDownSince ??= Date.now();
    if (redisDownSince && Date.now() - redisDownSince > REDIS_GIVE_UP_MS) {
      log.fatal({ redis: describeRedisUrl(env.REDIS_URL) }, `Redis unreachable for ${REDIS_GIVE_UP_MS / 1000}s; exiting so the supervisor restarts this worker`);
      process.exit(3);
    }
  }, 1_000);
  watchdog.unref();

  const hygiene = new DiskHygiene(engine.docker, { olderThanMs: env.IMGBUILDER_PRUNE_AFTER, intervalMs: env.IMGBUILDER_PRUNE_INTERVAL }, metrics, log);
  hygiene.start();

  const metricsAddr = env.IMGBUILDER_METRICS_ADDR ?? '0.0.0.0:9091';
  const ready = async () => (await redis.ping()) === 'PONG' && (await engine.ping().then(() => true, () => false));
  const http = metricsAddr
    ? await startHealthServer({ addr: metricsAddr, registry: metrics.registry, ready }).catch((err: Error) => {
        log.warn({ err: err.message, addr: metricsAddr }, 'health/metrics HTTP server not started (set IMGBUILDER_METRICS_ADDR)');
        return undefined;
      })
    : undefined;
  log.info({ concurrency: env.IMGBUILDER_WORKER_CONCURRENCY, redis: describeRedisUrl(env.REDIS_URL), docker: env.DOCKER_HOST, metrics: metricsAddr || 'off' }, 'imgbuilder worker started');

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, running: running.size, graceMs: env.IMGBUILDER_WORKER_SHUTDOWN_GRACE }, 'stopping: no new builds; running ones finish within the grace period');
    hygiene.stop();
    const grace = setTimeout(() => {
      for (const ctl of running.values()) ctl.abort();
    }, env.IMGBUILDER_WORKER_SHUTDOWN_GRACE);
    grace.unref();
    await worker.close();
    clearTimeout(grace);
    http?.close();
    redis.disconnect();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

main().catch((err) => {
  if (err instanceof ConfigError) log.fatal(err.message);
  else log.fatal({ err }, 'worker failed to start');
  process.exit(1);
});
