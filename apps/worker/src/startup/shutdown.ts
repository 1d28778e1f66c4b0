import type { Env } from '@imgbuilder/common/config';
import { stopTracing } from '@imgbuilder/common/tracing';
import type { Logger } from '@imgbuilder/common/logger';
import type { DiskHygiene } from '../disk-hygiene.js';
import type { Reaper } from '../reaper.js';
import type { Admission } from './admission.js';
import type { BuildQueue } from './build-queue.js';
import type { EngineSetup } from './engine.js';
import type { WorkerServices } from './services.js';

/** What a stopping worker winds down. */
export interface RunningWorker {
  services: WorkerServices;
  setup: EngineSetup;
  jobs: BuildQueue;
  reaper: Reaper;
  hygiene: DiskHygiene;
  admission: Admission;
}

/**
 * On SIGTERM or SIGINT: no new builds; running ones finish within IMGBUILDER_WORKER_SHUTDOWN_GRACE, then are handed
 * back to the queue for another worker; endings in flight are waited for; then the process exits.
 */
export function stopOnSignals(env: Env, w: RunningWorker, log: Logger): void {
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    const { running, worker, queue, endings, track } = w.jobs;
    log.info({ signal, running: running.size, graceMs: env.IMGBUILDER_WORKER_SHUTDOWN_GRACE }, 'stopping: no new builds; running ones finish within the grace period');
    w.hygiene.stop();
    w.admission.stop();
    w.setup.sandbox.close();
    track(w.reaper.stop());
    const grace = setTimeout(() => {
      log.info({ running: running.size }, 'grace period over: handing running builds back');
      for (const ctl of running.values()) ctl.abort();
    }, env.IMGBUILDER_WORKER_SHUTDOWN_GRACE);
    grace.unref();
    await worker.close();
    clearTimeout(grace);
    await Promise.allSettled([...endings]);
    w.admission.http?.close();
    await queue.close().catch(() => undefined);
    w.services.redis.disconnect();
    log.info('worker stopped');
    await stopTracing();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}
