import { cacheRepositoryOf, type Env } from '@imgbuilder/common/config';
import type { Logger } from '@imgbuilder/common/logger';
import { createDocker, DockerEngine } from '../docker-engine.js';
import { createImageBuilder } from '../builder/builder-factory.js';
import type { ImageBuilder } from '../builder/image-builder.js';
import { BuildSandbox } from '../builder/build-sandbox.js';
import { BuildCache } from '../builder/build-cache.js';
import type { WorkerServices } from './services.js';

/** Label on every image this installation builds, so disk hygiene on a shared engine can tell them apart. */
export const NAMESPACE_LABEL = 'org.imgbuilder.namespace';

/** The Docker engine and what builds on it: the builder, the sandbox that holds builds to their limits, the cache. */
export interface EngineSetup {
  engine: DockerEngine;
  builder: ImageBuilder;
  sandbox: BuildSandbox;
  cache?: BuildCache;
  /**
   * Why this worker may take no builds because their limits cannot be enforced; asked again by every readiness probe
   * (a limits agent can go away and come back). Undefined with IMGBUILDER_BUILD_LIMITS=off.
   */
  limitsRefusal(): string | undefined;
}

export async function prepareEngine(env: Env, services: WorkerServices, log: Logger): Promise<EngineSetup> {
  const engine = new DockerEngine(createDocker(env.DOCKER_HOST), env.DOCKER_HOST, { [NAMESPACE_LABEL]: env.IMGBUILDER_REDIS_NAMESPACE });
  const builder = createImageBuilder(env.IMGBUILDER_BUILDER, engine);
  log.info({ builder: builder.kind }, 'builder selected');
  const limits = { memory: env.IMGBUILDER_BUILD_MEMORY, cpus: env.IMGBUILDER_BUILD_CPUS, pids: env.IMGBUILDER_BUILD_PIDS, disk: env.IMGBUILDER_BUILD_DISK };
  const sandbox = await BuildSandbox.create(engine.docker, limits, { cgroupRoot: env.IMGBUILDER_BUILD_CGROUP_ROOT, agent: env.IMGBUILDER_LIMITS_AGENT }, builder.kind, log);
  // A worker that cannot hold builds to their limits takes none, unless the operator accepts that.
  const limitsProblem = () => (sandbox.unenforceable ? `build limits cannot be enforced: ${sandbox.unenforceable}` : undefined);
  if (env.IMGBUILDER_BUILD_LIMITS === 'off') log.warn({ problem: limitsProblem() }, 'IMGBUILDER_BUILD_LIMITS=off: builds are taken even where their memory, process and disk limits cannot be enforced; only for trusted Dockerfiles');
  const { registry, objects, installation, cacheRefs } = services;
  const cache = builder.kind === 'buildkit' ? new BuildCache({ registry, objects, engine, installation, repository: cacheRepositoryOf(env), refs: cacheRefs }) : undefined;
  return { engine, builder, sandbox, cache, limitsRefusal: () => (env.IMGBUILDER_BUILD_LIMITS === 'off' ? undefined : limitsProblem()) };
}

export function describeLimits(env: Env): string {
  return `memory ${env.IMGBUILDER_BUILD_MEMORY.text}, cpus ${env.IMGBUILDER_BUILD_CPUS}, pids ${env.IMGBUILDER_BUILD_PIDS}, disk ${env.IMGBUILDER_BUILD_DISK.text}`;
}
