import { ConfigError } from '@imgbuilder/common/errors';
import { createLogger } from '@imgbuilder/common/logger';
import { loadProcessConfig } from '@imgbuilder/common/process-config';
import { startTracing } from '@imgbuilder/common/tracing';
import { WorkerMetrics } from './metrics.js';
import { connectServices } from './startup/services.js';
import { prepareEngine } from './startup/engine.js';
import { createRunner } from './startup/runner.js';
import { openBuildQueue } from './startup/build-queue.js';
import { exitWhenRedisStaysAway, startDiskHygiene, startReaper } from './startup/upkeep.js';
import { admitBuilds } from './startup/admission.js';
import { stopOnSignals } from './startup/shutdown.js';

const log = createLogger('imgbuilder-worker');

/** The worker process: each step is a module of startup/, in the order they depend on each other. */
async function main(): Promise<void> {
  const cfg = loadProcessConfig(log);
  const { env } = cfg;
  await startTracing(env, 'imgbuilder-worker');
  const services = connectServices(cfg, log);
  const setup = await prepareEngine(env, services, log);
  const metrics = new WorkerMetrics();
  const runner = createRunner(env, services, setup, metrics, log);
  const jobs = await openBuildQueue(env, services, runner, metrics, log);
  const reaper = startReaper(env, services, jobs.queue, runner, log);
  exitWhenRedisStaysAway(env, services.outage, log);
  const hygiene = startDiskHygiene(env, setup.engine, services, metrics, log);
  const admission = await admitBuilds(env, services, setup, jobs, runner, metrics, log);
  stopOnSignals(env, { services, setup, jobs, reaper, hygiene, admission }, log);
}

main().catch((err) => {
  if (err instanceof ConfigError) log.fatal(err.message);
  else log.fatal({ err }, 'worker failed to start');
  process.exit(1);
});
