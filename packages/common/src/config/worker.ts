import { z } from 'zod';
import { duration, int, list, sizeLimit, egressAllow, CIDR } from './values.js';

/**
 * The worker's: the Docker engine, the builder, each build's limits and egress policy, the job's lifetime, disk
 * hygiene.
 */
export const workerFields = {
  /** Which of the engine's builders runs Dockerfiles: `buildkit` (parallel stages, registry cache) or `classic`. */
  IMGBUILDER_BUILDER: z.enum(['buildkit', 'classic']).default('buildkit'),
  /** Docker engine the worker builds with. */
  DOCKER_HOST: z.string().default('unix:///var/run/docker.sock'),
  /**
   * Exceptions to the build-step egress policy (comma-separated CIDRs or host:port), read by the scripts that install
   * the policy on each kind of engine (infra/engine/egress-policy.sh); the worker only validates and logs it.
   */
  IMGBUILDER_BUILD_EGRESS_ALLOW: egressAllow,
  /** Ranges build steps may not reach on top of the policy's own (comma-separated CIDRs), read by the same scripts. */
  IMGBUILDER_BUILD_EGRESS_DENY: list.refine((entries) => entries.every((e) => CIDR.test(e)), 'expected comma-separated CIDRs (203.0.113.0/24, 2001:db8::/32)'),
  /** `on`: the worker proves at start, with a probe container, that build steps cannot reach the engine's host. */
  IMGBUILDER_BUILD_EGRESS_CHECK: z.enum(['on', 'off']).default('on'),
  /** `on`: a BuildKit worker checks at start, with a 3 MiB probe build, whether the engine clips a step's output. */
  IMGBUILDER_ENGINE_LOG_CHECK: z.enum(['on', 'off']).default('on'),
  /** Image for the egress probe; by default the worker imports one made of the host's static busybox. */
  IMGBUILDER_BUILD_EGRESS_PROBE_IMAGE: z.string().optional(),
  /** Memory (swap counted in it) one build's steps may use together. */
  IMGBUILDER_BUILD_MEMORY: sizeLimit('4GiB'),
  /** CPUs one build's steps may use together (fractions allowed). */
  IMGBUILDER_BUILD_CPUS: z.coerce.number().positive().max(1024).default(2),
  /** Processes (and threads) one build's steps may run at once. */
  IMGBUILDER_BUILD_PIDS: int(1024, 8),
  /** Disk space a build's steps may add (layers written), measured while the build runs. */
  IMGBUILDER_BUILD_DISK: sizeLimit('20GiB'),
  /** `off`: a worker that cannot enforce the build limits takes builds anyway (warned at every start). */
  IMGBUILDER_BUILD_LIMITS: z.enum(['on', 'off']).default('on'),
  /**
   * Unix socket of the limits agent inside the engine's container (the worker then handles cgroups and BuildKit's
   * steps through it; the agent listens there). Empty: the worker does that itself, on the engine's host.
   */
  IMGBUILDER_LIMITS_AGENT: z.string().default(''),
  /** Where the engine's cgroup filesystem is mounted, when the worker shares the engine's host (cgroup v1 or v2). */
  IMGBUILDER_BUILD_CGROUP_ROOT: z.string().default('/sys/fs/cgroup'),
  /** Builds one worker process runs at the same time. */
  IMGBUILDER_WORKER_CONCURRENCY: int(2, 1),
  /** Builds one caller may have running at once across all workers; 0: no limit (fair share still applies). */
  IMGBUILDER_MAX_RUNNING_PER_CALLER: int(0, 0),
  /** A build running longer is stopped and fails. */
  IMGBUILDER_BUILD_TIMEOUT: duration('60m'),
  /** How long a worker may go silent (killed) before its build is handed to another worker. */
  IMGBUILDER_WORKER_LOCK_TIMEOUT: duration('30s'),
  /** How often workers check for builds whose worker died. */
  IMGBUILDER_STALLED_CHECK_INTERVAL: duration('15s'),
  /** How many times a build may lose its worker before it fails. */
  IMGBUILDER_MAX_BUILD_RESTARTS: int(2, 0),
  /** Grace period for running builds when a worker gets SIGTERM. */
  IMGBUILDER_WORKER_SHUTDOWN_GRACE: duration('5m'),
  /** Worker disk hygiene: images and build cache unused this long are pruned. */
  IMGBUILDER_PRUNE_AFTER: duration('24h'),
  IMGBUILDER_PRUNE_INTERVAL: duration('10m'),
  /**
   * Which unused tagged images disk hygiene removes: `all` (an engine dedicated to imgbuilder, pulled base images
   * included) or `own` (only images this installation built: an engine shared with others). Dangling images always.
   */
  IMGBUILDER_PRUNE_IMAGES: z.enum(['all', 'own']).default('all'),
};
