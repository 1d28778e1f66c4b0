import { join } from 'node:path';
import { EnvFields } from '@imgbuilder/common/config';
import { createLogger } from '@imgbuilder/common/logger';
import { createDocker } from './docker-engine.js';
import { LocalEngineHost } from './builder/engine-host.js';
import { serveLimitsAgent } from './builder/limits-agent.js';
import type { BuildkitExecution } from './builder/buildkit-executions.js';

/**
 * The limits agent's process (builder/limits-agent.ts), run inside the engine's container next to dockerd:
 * IMGBUILDER_LIMITS_AGENT is the socket it listens on, IMGBUILDER_BUILD_CGROUP_ROOT the engine's cgroup filesystem.
 */
const log = createLogger('imgbuilder-limits-agent');

async function main(): Promise<void> {
  const env = EnvFields.pick({ DOCKER_HOST: true, IMGBUILDER_LIMITS_AGENT: true, IMGBUILDER_BUILD_CGROUP_ROOT: true, LOG_LEVEL: true }).parse(process.env);
  log.level = env.LOG_LEVEL;
  if (!env.IMGBUILDER_LIMITS_AGENT) throw new Error('IMGBUILDER_LIMITS_AGENT must name the socket to listen on');
  const info = (await createDocker(env.DOCKER_HOST).info()) as { DockerRootDir?: string };
  const dataRoot = info.DockerRootDir ?? '/var/lib/docker';
  let publish: (e: BuildkitExecution) => void = () => undefined;
  const host = await LocalEngineHost.open(env.IMGBUILDER_BUILD_CGROUP_ROOT, join(dataRoot, 'buildkit', 'executor'), (e) => publish(e));
  if (!host) throw new Error(`the cgroup filesystem at ${env.IMGBUILDER_BUILD_CGROUP_ROOT} is not writable here: run the agent in the engine's (privileged) container`);
  const agent = await serveLimitsAgent(host, env.IMGBUILDER_LIMITS_AGENT, dataRoot);
  publish = agent.publish;
  log.info({ socket: env.IMGBUILDER_LIMITS_AGENT, cgroups: host.describe(), buildkit: host.watchesBuildkit }, 'limits agent listening');
  const stop = () => {
    agent.server.close();
    host.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err: Error) => {
  log.fatal({ err: err.message }, 'limits agent failed to start');
  process.exit(1);
});
