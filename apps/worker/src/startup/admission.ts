import type { Env } from '@imgbuilder/common/config';
import type { Logger } from '@imgbuilder/common/logger';
import { describeRedisUrl } from '@imgbuilder/common/redis';
import { startHealthServer } from '@imgbuilder/common/health-server';
import type { BuildRunner } from '../build-runner.js';
import { EgressGate } from '../egress-check.js';
import { checkStepLogs, type StepLogVerdict } from '../engine-log-check.js';
import type { WorkerMetrics } from '../metrics.js';
import type { BuildQueue } from './build-queue.js';
import { describeLimits, NAMESPACE_LABEL, type EngineSetup } from './engine.js';
import type { WorkerServices } from './services.js';

/** A worker whose egress probe failed checks again this often, so fixing the engine's rules needs no restart. */
const EGRESS_RECHECK_MS = 30_000;

/** Whether this worker takes builds, and what its health server says about it. */
export interface Admission {
  /** Stops the egress re-check and makes a check in flight take no builds. */
  stop(): void;
  /** The health and metrics server, if it started. */
  http?: { close(): void };
}

/**
 * Starts taking builds once this worker may: an untrusted RUN step must not reach this host's services, so the engine's
 * egress policy is proved before the first build (and re-checked while it fails), and a worker that cannot hold builds
 * to their limits takes none. Readiness (the health server) says the same; the engine's step-log check is reported
 * there too.
 */
export async function admitBuilds(env: Env, services: WorkerServices, setup: EngineSetup, jobs: BuildQueue, runner: BuildRunner, metrics: WorkerMetrics, log: Logger): Promise<Admission> {
  const { engine, builder, limitsRefusal } = setup;
  const gate = env.IMGBUILDER_BUILD_EGRESS_CHECK === 'off' ? undefined : new EgressGate(engine.docker, { probeImage: env.IMGBUILDER_BUILD_EGRESS_PROBE_IMAGE, labels: { [NAMESPACE_LABEL]: env.IMGBUILDER_REDIS_NAMESPACE } });
  runner.useEgressGate(gate);
  let stopped = false;
  let egressProblem: string | undefined;
  let egressTimer: NodeJS.Timeout | undefined;
  const stepLogs = watchStepLogs(env, setup, log);
  const metricsAddr = env.IMGBUILDER_METRICS_ADDR ?? '0.0.0.0:9091';
  const ready = async () => !limitsRefusal() && (!gate || gate.ok === true) && (await services.redis.ping()) === 'PONG' && (await engine.ping().then(() => true, () => false));
  const http = metricsAddr
    ? await startHealthServer({ addr: metricsAddr, registry: metrics.registry, ready, notReadyReason: () => limitsRefusal() ?? egressProblem, details: () => ({ engine_step_logs: stepLogs().stepLogs }) }).catch((err: Error) => {
        log.warn({ err: err.message, addr: metricsAddr }, 'health/metrics HTTP server not started (set IMGBUILDER_METRICS_ADDR)');
        return undefined;
      })
    : undefined;
  const startTakingBuilds = () => {
    void jobs.worker.run().catch((err: Error) => log.error({ err: err.message }, 'worker stopped taking builds'));
    log.info(
      { concurrency: env.IMGBUILDER_WORKER_CONCURRENCY, redis: describeRedisUrl(env.REDIS_URL), namespace: services.keys.hashTag, docker: env.DOCKER_HOST, metrics: metricsAddr || 'off', limits: describeLimits(env) },
      'imgbuilder worker started',
    );
  };
  const refusal = limitsRefusal();
  if (refusal) {
    log.error({ cgroupRoot: env.IMGBUILDER_BUILD_CGROUP_ROOT, builder: builder.kind }, `worker not ready, taking no builds: ${refusal} (run the worker where it sees the engine's cgroups and BuildKit's executor directory, see README "What a build may use"; or IMGBUILDER_BUILD_LIMITS=off)`);
  } else if (!gate) {
    log.warn('IMGBUILDER_BUILD_EGRESS_CHECK=off: build steps are NOT checked for access to this host, the engine\'s host or private networks; only for trusted Dockerfiles');
    startTakingBuilds();
  } else {
    const verify = async () => {
      const verdict = await gate.check();
      if (stopped) return;
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
  return {
    stop() {
      stopped = true;
      clearTimeout(egressTimer);
    },
    http,
  };
}

/**
 * The classic builder passes a step's output through; BuildKit's may be clipped by the engine (see engine-log-check):
 * checked once in the background, the verdict read by the health server.
 */
function watchStepLogs(env: Env, { engine, builder }: EngineSetup, log: Logger): () => StepLogVerdict {
  let verdict: StepLogVerdict = { stepLogs: builder.kind === 'buildkit' ? 'unchecked' : 'full' };
  if (builder.kind === 'buildkit' && env.IMGBUILDER_ENGINE_LOG_CHECK === 'off') verdict = { stepLogs: 'unchecked', reason: 'IMGBUILDER_ENGINE_LOG_CHECK=off' };
  else if (builder.kind === 'buildkit') {
    void checkStepLogs(engine, { probeImage: env.IMGBUILDER_BUILD_EGRESS_PROBE_IMAGE, labels: engine.labels }).then((v) => {
      verdict = v;
      if (v.stepLogs === 'clipped') log.warn({ received: v.received }, 'the Docker engine clips build steps\' output: logs lose lines beyond its BuildKit step-log limits; start dockerd with BUILDKIT_STEP_LOG_MAX_SIZE and BUILDKIT_STEP_LOG_MAX_SPEED raised (infra/engine/engine-start.sh does)');
      else if (v.stepLogs === 'unchecked') log.warn({ why: v.reason }, 'could not check whether the Docker engine clips build steps\' output');
      else log.info('engine step-log check passed: build steps\' output reaches the log whole');
    });
  }
  return () => verdict;
}
