import type { Env } from '@imgbuilder/common/config';
import type { Logger } from '@imgbuilder/common/logger';
import { BuildRunner, type RunnerSettings } from '../build-runner.js';
import type { WorkerMetrics } from '../metrics.js';
import type { EngineSetup } from './engine.js';
import type { WorkerServices } from './services.js';

/** The runner of one build's stages, wired to the services and the engine. */
export function createRunner(env: Env, services: WorkerServices, setup: EngineSetup, metrics: WorkerMetrics, log: Logger): BuildRunner {
  const { store, objects, logs, registry, secrets, installation } = services;
  const { engine, builder, cache, sandbox } = setup;
  return new BuildRunner({ settings: runnerSettings(env), store, objects, logs, registry, engine, builder, cache, secrets, installation, metrics, log, sandbox });
}

function runnerSettings(env: Env): RunnerSettings {
  return {
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
}
