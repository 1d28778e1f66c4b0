import { DelayedError, Queue, Worker, type Job } from 'bullmq';
import { loadEnv, ConfigError, type Env } from '@imgbuilder/common/config';
import { FetchPolicy, installFetchPolicy } from '@imgbuilder/common/fetch-policy';
import { formatDuration } from '@imgbuilder/common/duration';
import { createLogger } from '@imgbuilder/common/logger';
import { redisConnector, describeRedisUrl, watchOutage } from '@imgbuilder/common/redis';
import { BuildStore, CancelRequests, DEFER_MS, FairShare, fairShareTtlMs, LogStore, QUEUE_NAME, redisKeys } from '@imgbuilder/common/build-life';
import { RegistryClient } from '@imgbuilder/common/registry-client';
import { loadCredentialFile } from '@imgbuilder/common/registry-auth';
import { ObjectStore, objectStoreOptions } from '@imgbuilder/common/object-store';
import { SecretBox } from '@imgbuilder/common/secret-box';
import { startHealthServer } from '@imgbuilder/common/health-server';
import type { BuildJobData } from '@imgbuilder/common/build-job';
import { BuildRunner, type RunnerSettings } from './build-runner.js';
import { endBuild } from './report/build-ending.js';
import { Reaper, jobGone } from './reaper.js';
import { createDocker, DockerEngine } from './docker-engine.js';
import { WorkerMetrics } from './metrics.js';
import { DiskHygiene } from './disk-hygiene.js';
import { BuildSandbox } from './builder/build-sandbox.js';
import { EgressGate } from './egress-check.js';
import { createImageBuilder } from './builder/image-builder.js';
import { BuildCache } from './builder/build-cache.js';
import { checkStepLogs, type StepLogVerdict } from './engine-log-check.js';
import { WorkerBuildControl } from './build-control.js';
import { BuildCancelled } from '@imgbuilder/common/errors';

const log = createLogger('imgbuilder-worker');
/** A worker whose egress probe failed checks again this often, so fixing the engine's rules needs no restart. */
const EGRESS_RECHECK_MS = 30_000;
/** Label on every image this installation builds, so disk hygiene on a shared engine can tell them apart. */
const NAMESPACE_LABEL = 'org.imgbuilder.namespace';

async function main(): Promise<void> {
  const env = loadEnv();
  // Every fetch this process makes on a build's behalf obeys it (git, downloads, registries).
  installFetchPolicy(FetchPolicy.fromEnv(env));
  // The configured level; child loggers made from here on inherit it.
  log.level = env.LOG_LEVEL;
  const connectRedis = redisConnector(env.REDIS_URL, env.IMGBUILDER_REDIS_TLS_CA);
  const installation = loadCredentialFile(env.IMGBUILDER_REGISTRY_AUTH_FILE);
  const secrets = SecretBox.fromKey(env.IMGBUILDER_SECRET_KEY);
  const keys = redisKeys(env.IMGBUILDER_REDIS_NAMESPACE);
  // Waits through a Redis restart instead of failing a build's bookkeeping; the watchdog below bounds the wait.
  const redis = connectRedis('imgbuilder-worker', { blocking: true });
  redis.on('error', (err) => log.warn({ err: err.message }, 'redis connection error'));
  const outage = watchOutage(redis);
  const store = new BuildStore(redis, keys);
  const objects = new ObjectStore(objectStoreOptions(env));
  objects.ensureBucket().catch((err: Error) => log.warn({ err: err.message }, 'object store not reachable yet'));
  const engine = new DockerEngine(createDocker(env.DOCKER_HOST), env.DOCKER_HOST, { [NAMESPACE_LABEL]: env.IMGBUILDER_REDIS_NAMESPACE });
  const builder = await createImageBuilder(env.IMGBUILDER_BUILDER, engine);
  log.info({ builder: builder.kind }, 'builder selected');
  const metrics = new WorkerMetrics();
  const limits = { memory: env.IMGBUILDER_BUILD_MEMORY, cpus: env.IMGBUILDER_BUILD_CPUS, pids: env.IMGBUILDER_BUILD_PIDS, disk: env.IMGBUILDER_BUILD_DISK };
  const sandbox = await BuildSandbox.create(engine.docker, limits, { cgroupRoot: env.IMGBUILDER_BUILD_CGROUP_ROOT, agent: env.IMGBUILDER_LIMITS_AGENT }, builder.kind, log);
  // A worker that cannot hold builds to their limits takes none, unless the operator accepts that. Asked again by
  // every readiness probe: a limits agent can go away and come back.
  const limitsProblem = () => sandbox.unenforceable && `build limits cannot be enforced: ${sandbox.unenforceable}`;
  if (env.IMGBUILDER_BUILD_LIMITS === 'off') log.warn({ problem: limitsProblem() }, 'IMGBUILDER_BUILD_LIMITS=off: builds are taken even where their memory, process and disk limits cannot be enforced; only for trusted Dockerfiles');
  const logs = new LogStore(redis, keys, objects);
  const registry = new RegistryClient({ insecureHosts: env.IMGBUILDER_INSECURE_REGISTRIES });
  const cache = builder.kind === 'buildkit' ? new BuildCache({ registry, objects, engine, installation, repository: env.IMGBUILDER_CACHE_REPOSITORY || env.IMGBUILDER_BASE_REPOSITORY }) : undefined;
  const settings: RunnerSettings = {
    baseRepository: env.IMGBUILDER_BASE_REPOSITORY,
    workspaceRepository: env.IMGBUILDER_WORKSPACE_REPOSITORY,
    buildTimeoutMs: env.IMGBUILDER_BUILD_TIMEOUT,
    redisGiveUpMs: env.IMGBUILDER_REDIS_GIVE_UP,
    retentionMs: env.IMGBUILDER_LOG_RETENTION,
    streamTtlMs: env.IMGBUILDER_LOG_STREAM_TTL,
    maxLogBytes: env.IMGBUILDER_LOG_MAX_BYTES,
    redisTailBytes: env.IMGBUILDER_LOG_REDIS_TAIL,
    maxContextBytes: env.IMGBUILDER_MAX_CONTEXT_BYTES,
    maxContextFiles: env.IMGBUILDER_MAX_CONTEXT_FILES,
    allowLocalSources: env.IMGBUILDER_ALLOW_LOCAL_SOURCES,
    snapshotSources: env.IMGBUILDER_SNAPSHOT_SOURCES,
    allowedFrontends: env.IMGBUILDER_ALLOWED_FRONTENDS,
  };
  const runner = new BuildRunner({ settings, store, objects, logs, registry, engine, builder, cache, secrets, installation, metrics, log, sandbox });

  const running = new Map<string, AbortController>();
  const fair = new FairShare(redis, keys, fairShareTtlMs(env.IMGBUILDER_MAX_QUEUE_WAIT, env.IMGBUILDER_BUILD_TIMEOUT));
  const cancels = new CancelRequests(redis, keys);
  const control = new WorkerBuildControl({ cancels, subscriber: connectRedis('imgbuilder-worker-cancel', { blocking: true }), fair, log, maxRunningPerCaller: env.IMGBUILDER_MAX_RUNNING_PER_CALLER }, running);
  await control.start();
  const runJob = async (job: Job<BuildJobData>, token?: string): Promise<void> => {
    if (token && !(await control.mayStart(job.data))) {
      // Its caller has IMGBUILDER_MAX_RUNNING_PER_CALLER builds running: back to the queue, same priority.
      log.debug({ build_id: job.data.buildId }, 'build deferred: its caller is at its running limit');
      await job.moveToDelayed(Date.now() + DEFER_MS, token);
      throw new DelayedError();
    }
    const ctl = new AbortController();
    running.set(job.id!, ctl);
    metrics.active.inc();
    const buildLog = log.child({ build_id: job.data.buildId, ref: job.data.ref });
    try {
      await control.checkCancelled(job.data.buildId);
      const restarted = (job.stalledCounter ?? 0) > 0 || (job.attemptsStarted ?? 1) > 1 || (await store.get(job.data.buildId))?.state === 'running';
      if (restarted) metrics.restarted.inc();
      buildLog.info({ restarted, attempt: job.attemptsStarted, stalled: job.stalledCounter }, restarted ? 'build picked up again after its worker stopped' : 'build picked up');
      await runner.run(job.data, ctl.signal, { restarted });
    } catch (err) {
      if (ctl.signal.aborted && !(ctl.signal.reason instanceof BuildCancelled) && token) {
        // Graceful shutdown ran out of grace: hand the job back for another worker.
        buildLog.info('build handed back to the queue: shutdown grace period over');
        await job.moveToDelayed(Date.now(), token);
        throw new DelayedError();
      }
      throw err;
    } finally {
      running.delete(job.id!);
      metrics.active.dec();
    }
  };

  const worker = new Worker<BuildJobData>(QUEUE_NAME, runJob, {
    connection: connectRedis('imgbuilder-worker-bull', { blocking: true }),
    prefix: keys.queuePrefix,
    concurrency: env.IMGBUILDER_WORKER_CONCURRENCY,
    // A killed worker stops renewing its lock; once it expires the next stalled check queues the job again, so a
    // build is picked up again within lockDuration + stalledInterval.
    lockDuration: env.IMGBUILDER_WORKER_LOCK_TIMEOUT,
    stalledInterval: env.IMGBUILDER_STALLED_CHECK_INTERVAL,
    maxStalledCount: env.IMGBUILDER_MAX_BUILD_RESTARTS,
    removeOnComplete: { count: 0 },
    removeOnFail: { count: 0 },
    // Builds are taken only once the egress check below has passed.
    autorun: false,
  });
  worker.on('error', (err) => log.warn({ err: err.message }, 'worker error'));
  worker.on('stalled', (jobId) => {
    void store.get(jobId).then(
      (rec) => log.warn({ build_id: jobId, ref: rec?.ref }, 'build lost its worker (killed or unresponsive); queued again'),
      () => undefined,
    );
  });
  // Endings in flight: shutdown waits for them, so a build BullMQ gave up on is not left running.
  const endings = new Set<Promise<unknown>>();
  const track = (p: Promise<unknown>) => {
    endings.add(p);
    void p.finally(() => endings.delete(p));
  };
  const queue = new Queue(QUEUE_NAME, { connection: connectRedis('imgbuilder-worker-queue'), prefix: keys.queuePrefix });
  queue.on('error', (err) => log.warn({ err: err.message }, 'queue error'));
  worker.on('failed', (job, err) => {
    if (!job) return;
    // Jobs failed by BullMQ itself (stalled too often) never reached the runner's terminal state: end them here,
    // unless the job lives on elsewhere (this attempt lost its lock to a newer one, which owns the build).
    track(
      jobGone(queue, job.id!).then((gone) => gone ? endBuild(runner.ending, { buildId: job.data.buildId, ref: job.data.ref, state: 'done_failure', message: failedJobMessage(err, env.IMGBUILDER_MAX_BUILD_RESTARTS) }) : false).catch((e: Error) =>
        log.error({ err: e.message, build_id: job.data.buildId, ref: job.data.ref }, 'could not record failed build; the reaper ends it'),
      ),
    );
  });

  const reaper = new Reaper({
    store,
    queue,
    end: (r) => endBuild(runner.ending, { ...r, state: 'done_failure' }),
    log,
    intervalMs: env.IMGBUILDER_REAPER_INTERVAL,
    // The API creates the log object (bounded by the store's deadline) before it queues the job.
    enqueueGraceMs: 2 * env.IMGBUILDER_S3_TIMEOUT + 5_000,
    buildTimeoutMs: env.IMGBUILDER_BUILD_TIMEOUT,
    maxQueueWaitMs: env.IMGBUILDER_MAX_QUEUE_WAIT,
  });
  reaper.start();

  // A worker cut off from Redis can neither report nor be handed builds: exit so the supervisor restarts it.
  const watchdog = setInterval(() => {
    const down = outage.downForMs();
    if (down > env.IMGBUILDER_REDIS_GIVE_UP) {
      log.fatal({ redis: describeRedisUrl(env.REDIS_URL), downMs: down }, `Redis unreachable for over ${formatDuration(env.IMGBUILDER_REDIS_GIVE_UP)}; exiting so the supervisor restarts this worker`);
      process.exit(3);
    }
  }, 500);
  watchdog.unref();

  const hygiene = new DiskHygiene({
    docker: engine.docker,
    store,
    metrics,
    log,
    olderThanMs: env.IMGBUILDER_PRUNE_AFTER,
    intervalMs: env.IMGBUILDER_PRUNE_INTERVAL,
    buildTimeoutMs: env.IMGBUILDER_BUILD_TIMEOUT,
    ownImagesLabel: `${NAMESPACE_LABEL}=${env.IMGBUILDER_REDIS_NAMESPACE}`,
    images: env.IMGBUILDER_PRUNE_IMAGES,
  });
  hygiene.start();

  const metricsAddr = env.IMGBUILDER_METRICS_ADDR ?? '0.0.0.0:9091';
  const gate = env.IMGBUILDER_BUILD_EGRESS_CHECK === 'off' ? undefined : new EgressGate(engine.docker, { probeImage: env.IMGBUILDER_BUILD_EGRESS_PROBE_IMAGE, labels: { [NAMESPACE_LABEL]: env.IMGBUILDER_REDIS_NAMESPACE } });
  runner.useEgressGate(gate);
  let stopping = false;
  // Without a gate (the check turned off) builds are taken at once; with one, only once it has passed.
  const limitsRefusal = () => (env.IMGBUILDER_BUILD_LIMITS === 'off' ? undefined : limitsProblem());
  const refusal = limitsRefusal();
  let egressProblem: string | undefined;
  const ready = async () => !limitsRefusal() && (!gate || gate.ok === true) && (await redis.ping()) === 'PONG' && (await engine.ping().then(() => true, () => false));
  // The classic builder passes a step's output through; BuildKit's may be clipped by the engine (see engine-log-check).
  let stepLogs: StepLogVerdict = { stepLogs: builder.kind === 'buildkit' ? 'unchecked' : 'full' };
  if (builder.kind === 'buildkit' && env.IMGBUILDER_ENGINE_LOG_CHECK === 'off') stepLogs = { stepLogs: 'unchecked', reason: 'IMGBUILDER_ENGINE_LOG_CHECK=off' };
  else if (builder.kind === 'buildkit') {
    void checkStepLogs(engine, { probeImage: env.IMGBUILDER_BUILD_EGRESS_PROBE_IMAGE, labels: engine.labels }).then((v) => {
      stepLogs = v;
      if (v.stepLogs === 'clipped') log.warn({ received: v.received }, 'the Docker engine clips build steps\' output: logs lose lines beyond its BuildKit step-log limits; start dockerd with BUILDKIT_STEP_LOG_MAX_SIZE and BUILDKIT_STEP_LOG_MAX_SPEED raised (infra/engine/engine-start.sh does)');
      else if (v.stepLogs === 'unchecked') log.warn({ why: v.reason }, 'could not check whether the Docker engine clips build steps\' output');
      else log.info('engine step-log check passed: build steps\' output reaches the log whole');
    });
  }
  const http = metricsAddr
    ? await startHealthServer({ addr: metricsAddr, registry: metrics.registry, ready, notReadyReason: () => limitsRefusal() ?? egressProblem, details: () => ({ engine_step_logs: stepLogs.stepLogs }) }).catch((err: Error) => {
        log.warn({ err: err.message, addr: metricsAddr }, 'health/metrics HTTP server not started (set IMGBUILDER_METRICS_ADDR)');
        return undefined;
      })
    : undefined;
  // An untrusted RUN step must not reach this host's services: prove the engine's egress policy holds before taking
  // a single build, and stay unready (no builds taken) while it does not.
  let egressTimer: NodeJS.Timeout | undefined;
  const startTakingBuilds = () => {
    void worker.run().catch((err: Error) => log.error({ err: err.message }, 'worker stopped taking builds'));
    log.info(
      { concurrency: env.IMGBUILDER_WORKER_CONCURRENCY, redis: describeRedisUrl(env.REDIS_URL), namespace: keys.hashTag, docker: env.DOCKER_HOST, metrics: metricsAddr || 'off', limits: describeLimits(env) },
      'imgbuilder worker started',
    );
  };
  if (refusal) {
    log.error({ cgroupRoot: env.IMGBUILDER_BUILD_CGROUP_ROOT, builder: builder.kind }, `worker not ready, taking no builds: ${refusal} (run the worker where it sees the engine's cgroups and BuildKit's executor directory, see README "What a build may use"; or IMGBUILDER_BUILD_LIMITS=off)`);
  } else if (!gate) {
    log.warn('IMGBUILDER_BUILD_EGRESS_CHECK=off: build steps are NOT checked for access to this host, the engine\'s host or private networks; only for trusted Dockerfiles');
    startTakingBuilds();
  } else {
    const verify = async () => {
      const verdict = await gate.check();
      if (stopping) return;
      egressProblem = verdict.ok || verdict.engineDown ? undefined : verdict.reason;
      if (verdict.ok) {
        log.info({ probed: verdict.targets }, 'egress check passed: build steps cannot reach this host');
        startTakingBuilds();
      } else if (verdict.engineDown) {
        // Nothing can be built without the engine, and builds should fail saying so; the check runs again before the
        // first build that reaches the engine.
        log.warn('egress check deferred: the Docker engine is unreachable; it runs before the next build');
        startTakingBuilds();
      } else {
        log.error({ probed: verdict.targets, allow: env.IMGBUILDER_BUILD_EGRESS_ALLOW, deny: env.IMGBUILDER_BUILD_EGRESS_DENY }, `worker not ready, taking no builds: ${verdict.reason}`);
        egressTimer = setTimeout(() => void verify(), EGRESS_RECHECK_MS);
        egressTimer.unref();
      }
    };
    await verify();
  }

  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, running: running.size, graceMs: env.IMGBUILDER_WORKER_SHUTDOWN_GRACE }, 'stopping: no new builds; running ones finish within the grace period');
    hygiene.stop();
    clearTimeout(egressTimer);
    sandbox.close();
    track(reaper.stop());
    const grace = setTimeout(() => {
      log.info({ running: running.size }, 'grace period over: handing running builds back');
      for (const ctl of running.values()) ctl.abort();
    }, env.IMGBUILDER_WORKER_SHUTDOWN_GRACE);
    grace.unref();
    await worker.close();
    clearTimeout(grace);
    await Promise.allSettled([...endings]);
    http?.close();
    await queue.close().catch(() => undefined);
    redis.disconnect();
    log.info('worker stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

function describeLimits(env: Env): string {
  return `memory ${env.IMGBUILDER_BUILD_MEMORY.text}, cpus ${env.IMGBUILDER_BUILD_CPUS}, pids ${env.IMGBUILDER_BUILD_PIDS}, disk ${env.IMGBUILDER_BUILD_DISK.text}`;
}

/** Why BullMQ gave up on a job, for its build's terminal message (infrastructure: no "build failed: " prefix). */
function failedJobMessage(err: Error, restarts: number): string {
  return /stalled/i.test(err.message)
    ? `build stopped: its worker stopped responding (killed or out of memory?) ${restarts + 1} time${restarts ? 's' : ''}, more than the ${restarts} restart${restarts === 1 ? '' : 's'} IMGBUILDER_MAX_BUILD_RESTARTS allows`
    : `internal error: ${err.message}`;
}

main().catch((err) => {
  if (err instanceof ConfigError) log.fatal(err.message);
  else log.fatal({ err }, 'worker failed to start');
  process.exit(1);
});
