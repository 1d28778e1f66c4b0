import { DelayedError, Queue, Worker, type Job } from 'bullmq';
import type { Env } from '@imgbuilder/common/config';
import { inJobTrace } from '@imgbuilder/common/tracing';
import type { Logger } from '@imgbuilder/common/logger';
import { CancelRequests, DEFER_MS, FairShare, fairShareTtlMs, QUEUE_NAME } from '@imgbuilder/common/build-life';
import { BuildCancelled } from '@imgbuilder/common/errors';
import type { BuildJobData } from '@imgbuilder/common/build-job';
import type { BuildRunner } from '../build-runner.js';
import { WorkerBuildControl } from '../build-control.js';
import type { WorkerMetrics } from '../metrics.js';
import { endBuild } from '../report/build-ending.js';
import { jobGone } from '../reaper.js';
import type { WorkerServices } from './services.js';

/** The BullMQ side of a worker: the consumer that runs builds, the queue handle, and what is running now. */
export interface BuildQueue {
  /** Created paused: builds are taken once admission (admission.ts) lets them. */
  worker: Worker<BuildJobData>;
  queue: Queue;
  /** Running builds by job id; aborting one hands its job back to the queue. */
  running: Map<string, AbortController>;
  /** Endings in flight: shutdown waits for them, so a build BullMQ gave up on is not left running. */
  endings: Set<Promise<unknown>>;
  track(p: Promise<unknown>): void;
}

/** Opens the consumer (paused) and listens for cancels of the builds it runs. */
export async function openBuildQueue(env: Env, services: WorkerServices, runner: BuildRunner, metrics: WorkerMetrics, log: Logger): Promise<BuildQueue> {
  const { connectRedis, keys, store, redis } = services;
  const running = new Map<string, AbortController>();
  const control = new WorkerBuildControl(
    {
      cancels: new CancelRequests(redis, keys),
      subscriber: connectRedis('imgbuilder-worker-cancel', { blocking: true }),
      fair: new FairShare(redis, keys, fairShareTtlMs(env.IMGBUILDER_MAX_QUEUE_WAIT, env.IMGBUILDER_BUILD_TIMEOUT)),
      log,
      maxRunningPerCaller: env.IMGBUILDER_MAX_RUNNING_PER_CALLER,
    },
    running,
  );
  await control.start();
  const runJob = async (job: Job<BuildJobData>, token?: string): Promise<void> => {
    if (token && !(await control.mayStart(job.data))) {
      // Its caller has IMGBUILDER_MAX_RUNNING_PER_CALLER builds running: back to the queue, same priority (no span:
      // a deferred build is picked about once a second).
      log.debug({ build_id: job.data.buildId }, 'build deferred: its caller is at its running limit');
      await job.moveToDelayed(Date.now() + DEFER_MS, token);
      throw new DelayedError();
    }
    return runTraced(job, token);
  };
  // Each pick-up runs in the trace the job carries: its log lines name it, its spans join the caller's trace.
  const runTraced = (job: Job<BuildJobData>, token?: string): Promise<void> => inJobTrace(job.data.trace, job.timestamp, 'build job', async () => {
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
  }, { 'imgbuilder.build_id': job.data.buildId });

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
    autorun: false,
  });
  worker.on('error', (err) => log.warn({ err: err.message }, 'worker error'));
  worker.on('stalled', (jobId) => {
    void store.get(jobId).then(
      (rec) => log.warn({ build_id: jobId, ref: rec?.ref }, 'build lost its worker (killed or unresponsive); queued again'),
      () => undefined,
    );
  });
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
  return { worker, queue, running, endings, track };
}

/** Why BullMQ gave up on a job, for its build's terminal message (infrastructure: no "build failed: " prefix). */
function failedJobMessage(err: Error, restarts: number): string {
  return /stalled/i.test(err.message)
    ? `build stopped: its worker stopped responding (killed or out of memory?) ${restarts + 1} time${restarts ? 's' : ''}, more than the ${restarts} restart${restarts === 1 ? '' : 's'} IMGBUILDER_MAX_BUILD_RESTARTS allows`
    : `internal error: ${err.message}`;
}
