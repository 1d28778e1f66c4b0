import { z } from 'zod';
import { duration, bool, list, byteSize, isRepository, repository } from './values.js';

/**
 * What every process shares: Redis, the registries it pushes to, the object store and build logs, the secret
 * key, logging.
 */
export const platformFields = {
  /**
   * Redis (or Redis Cluster: `redis+cluster://host1:port,host2:port`), credentials included
   * (`redis://user:password@host:6379`, `rediss://` for TLS). Unset: the local stack's Redis (see localRedisUrl).
   */
  REDIS_URL: z.string().default('redis://127.0.0.1:6379'),
  /** CA (PEM file) that signed the Redis server's certificate, for `rediss://` with a private CA. */
  IMGBUILDER_REDIS_TLS_CA: z.string().optional(),
  /** Prefix (and Redis Cluster hash tag) of every key: lets several installations share one Redis. */
  IMGBUILDER_REDIS_NAMESPACE: z.string().regex(/^[a-zA-Z0-9_-]{1,32}$/, 'letters, digits, - and _ only').default('imgb'),
  /** HTTP /livez, /readyz and /metrics; empty turns it off. API default :9090, worker :9091. */
  IMGBUILDER_METRICS_ADDR: z.string().optional(),
  /** Where Dockerfile builds are pushed (the base ref's repository). */
  IMGBUILDER_BASE_REPOSITORY: repository('127.0.0.1:5000/imgbuilder/base'),
  /** Where workspace images are pushed (what clients run). */
  IMGBUILDER_WORKSPACE_REPOSITORY: repository('127.0.0.1:5000/imgbuilder/workspace'),
  /**
   * Repository of the layer cache refs (BuildKit), a repository of its own (see cacheRepositoryOf): retention deletes
   * manifests there.
   */
  IMGBUILDER_CACHE_REPOSITORY: z
    .string()
    .optional()
    .refine((s) => !s || isRepository(s), 'expected a repository like registry.example.com/team/cache'),
  /** Layer cache refs no build imported or pushed for this long are deleted by the workers' periodic pass. */
  IMGBUILDER_CACHE_RETENTION: duration('14d'),
  /** Docker config JSON (`auths`) holding the installation's registry credentials. */
  IMGBUILDER_REGISTRY_AUTH_FILE: z.string().optional(),
  /** Registry hosts reached over plain HTTP; localhost and 127.0.0.1 always are. */
  IMGBUILDER_INSECURE_REGISTRIES: list,
  /**
   * How long Redis may stay unreachable before a worker exits non-zero (its supervisor restarts it) and API
   * streams end with UNAVAILABLE instead of waiting on.
   */
  IMGBUILDER_REDIS_GIVE_UP: duration('60s'),
  /** S3-compatible endpoint for build logs and snapshots; empty means AWS S3. */
  IMGBUILDER_S3_ENDPOINT: z.string().default('http://127.0.0.1:4568'),
  IMGBUILDER_S3_BUCKET: z.string().min(3).default('imgbuilder-logs'),
  IMGBUILDER_S3_REGION: z.string().default('us-east-1'),
  /** Path-style addressing; default true when an endpoint is set. */
  IMGBUILDER_S3_FORCE_PATH_STYLE: bool(true).optional(),
  /** Every object-store request fails after this long without an answer (a hung store is treated as a down one). */
  IMGBUILDER_S3_TIMEOUT: duration('10s'),
  AWS_ACCESS_KEY_ID: z.string().optional(),
  AWS_SECRET_ACCESS_KEY: z.string().optional(),
  /** Lifetime of presigned log URLs (at most 7 days, S3's limit). */
  IMGBUILDER_LOG_URL_TTL: duration('1h', 7 * 86_400_000),
  /** How long records of finished builds stay in Redis (and so findable by Logs). */
  IMGBUILDER_LOG_RETENTION: duration('7d'),
  /** A build's log is cut beyond this size. */
  IMGBUILDER_LOG_MAX_BYTES: byteSize('64MiB'),
  /** Redis keeps about this much of the end of each build's log; readers get the rest from the log object. */
  IMGBUILDER_LOG_REDIS_TAIL: byteSize('1MiB'),
  /** 32 random bytes, base64: encrypts credentials carried in jobs. Required unless NODE_ENV=development. */
  IMGBUILDER_SECRET_KEY: z.string().optional(),
  /** Lets the API use NODE_ENV=development's fixed, public key while listening beyond loopback (never in production). */
  IMGBUILDER_INSECURE_DEV_KEY: bool(false),
  /**
   * How long a finished build's event stream stays in Redis once its log object is complete (for readers still
   * catching up; a reader it expires under continues from the object).
   */
  IMGBUILDER_LOG_STREAM_TTL: duration('5m'),
  /** How often the reaper ends builds whose job is gone or that outlived their deadline (one process at a time). */
  IMGBUILDER_REAPER_INTERVAL: duration('15s'),
  /** How long a build may wait in the queue before the reaper ends it; added to IMGBUILDER_BUILD_TIMEOUT. */
  IMGBUILDER_MAX_QUEUE_WAIT: duration('6h'),
  LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  NODE_ENV: z.string().optional(),
};
