import { loadEnv } from '@imgbuilder/common/config';
import { ConfigError } from '@imgbuilder/common/errors';
import { FetchPolicy, installFetchPolicy } from '@imgbuilder/common/fetch-policy';
import { createLogger } from '@imgbuilder/common/logger';
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
  const env = loadEnv();
  // Every fetch this process makes on a build's behalf obeys it (git, downloads, registries).
  installFetchPolicy(FetchPolicy.fromEnv(env));
  // The configured level; child loggers made from here on inherit it.
  log.level = env.LOG_LEVEL;
  const services = connectServices(env, log);
  const setup = await prepareEngine(env, services, log);
  const metrics = new WorkerMetrics();
  const runner = createRunner(env, services, setup, metrics, log);
  const jobs = openBuildQueue(env, services, runner, metrics, log);
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
