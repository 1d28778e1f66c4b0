import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { parseDuration } from './duration.js';
import { parseByteSize } from './byte-size.js';
import { invalidConfiguration } from './config-error.js';
import { FetchPolicy, type FetchPolicyOptions } from './fetch-policy.js';

const duration = (fallback: string, max?: number) =>
  z
    .string()
    .default(fallback)
    .transform((text, ctx) => {
      const ms = parseDuration(text);
      if (ms === undefined || ms <= 0) {
        ctx.addIssue({ code: 'custom', message: `"${text}" is not a duration (use seconds like 900, or 15m, 1h, 7d)` });
        return z.NEVER;
      }
      if (max !== undefined && ms > max) {
        ctx.addIssue({ code: 'custom', message: `"${text}" is longer than the allowed maximum` });
        return z.NEVER;
      }
      return ms;
    });

const bool = (fallback: boolean) =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no', ''])
    .optional()
    .transform((v) => (v === undefined || v === '' ? fallback : v === 'true' || v === '1' || v === 'yes'));

const int = (fallback: number, min: number) => z.coerce.number().int().min(min).default(fallback);

const list = z
  .string()
  .default('')
  .transform((s) => s.split(',').map((x) => x.trim()).filter(Boolean));

/** A size limit that keeps the text it was given, so messages can quote the setting exactly as written. */
const sizeLimit = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .transform((text, ctx) => {
      const bytes = parseByteSize(text);
      if (bytes === undefined || bytes <= 0) {
        ctx.addIssue({ code: 'custom', message: `"${text}" is not a size (use bytes, or 64MiB, 1GiB)` });
        return z.NEVER;
      }
      return { bytes, text: text.trim() };
    });

/** A size in bytes. */
const byteSize = (fallback: string) => sizeLimit(fallback).transform((v) => v.bytes);

const CIDR_OR_HOST_PORT = /^(\d{1,3}(\.\d{1,3}){3}(\/\d{1,2})?|[0-9a-fA-F:]*:[0-9a-fA-F:]*(\/\d{1,3})?|[A-Za-z0-9.-]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}|\d{1,3}(\.\d{1,3}){3}:\d{1,5})$/;

const egressAllow = list.refine((entries) => entries.every((e) => CIDR_OR_HOST_PORT.test(e)), 'expected comma-separated CIDRs (10.1.0.0/16) or host:port (mirror.internal:443)');

/** A fetch-policy list, checked by the policy's own parser (fetch-policy.ts). */
const fetchList = (key: keyof FetchPolicyOptions, expected: string) =>
  list.superRefine((entries, ctx) => {
    try {
      new FetchPolicy({ [key]: entries });
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: `${(err as Error).message}: expected ${expected}` });
    }
  });

const CIDR = /^(\d{1,3}(\.\d{1,3}){3}\/\d{1,2}|[0-9a-fA-F:]*:[0-9a-fA-F:]*\/\d{1,3})$/;

const hostPort = (fallback: string) =>
  z.string().default(fallback).refine((s) => /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/.test(s), 'expected HOST:PORT');

/** `host[:port]/path…` or a Docker Hub style `name/path…`. */
const isRepository = (s: string) => /^[a-z0-9.-]+(:\d+)?(\/[a-z0-9._-]+)+$/.test(s) || /^[a-z0-9._-]+(\/[a-z0-9._-]+)+$/.test(s);

const repository = (fallback: string) => z.string().default(fallback).refine(isRepository, 'expected a repository like registry.example.com/team/images');

/**
 * Every environment variable imgbuilder reads, with its default. Defaults describe the local stack that
 * `infra/local/up.sh` starts, so `npm run api` / `npm run worker` work on one machine without settings.
 */
export const EnvFields = z.object({
  /**
   * Redis (or Redis Cluster: `redis+cluster://host1:port,host2:port`), credentials included
   * (`redis://user:password@host:6379`, `rediss://` for TLS). Unset: the local stack's Redis (see localRedisUrl).
   */
  REDIS_URL: z.string().default('redis://127.0.0.1:6379'),
  /** CA (PEM file) that signed the Redis server's certificate, for `rediss://` with a private CA. */
  IMGBUILDER_REDIS_TLS_CA: z.string().optional(),
  /** Prefix (and Redis Cluster hash tag) of every key: lets several installations share one Redis. */
  IMGBUILDER_REDIS_NAMESPACE: z.string().regex(/^[a-zA-Z0-9_-]{1,32}$/, 'letters, digits, - and _ only').default('imgb'),
  /** gRPC listen address of the API. */
  IMGBUILDER_GRPC_ADDR: hostPort('0.0.0.0:8080'),
  /** HTTP /livez, /readyz and /metrics; empty turns it off. API default :9090, worker :9091. */
  IMGBUILDER_METRICS_ADDR: z.string().optional(),
  /** Where Dockerfile builds are pushed (the base ref's repository). */
  IMGBUILDER_BASE_REPOSITORY: repository('127.0.0.1:5000/imgbuilder/base'),
  /** Where workspace images are pushed (what clients run). */
  IMGBUILDER_WORKSPACE_REPOSITORY: repository('127.0.0.1:5000/imgbuilder/workspace'),
  /** Which of the engine's builders runs Dockerfiles: `buildkit` (parallel stages, registry cache) or `classic`. */
  IMGBUILDER_BUILDER: z.enum(['buildkit', 'classic']).default('buildkit'),
  /**
   * Repository for build cache images (BuildKit): each build's inline cache is pushed there under its source
   * identity too. Empty: the previous base image of the same source identity is the cache.
   */
  IMGBUILDER_CACHE_REPOSITORY: z
    .string()
    .optional()
    .refine((s) => !s || isRepository(s), 'expected a repository like registry.example.com/team/cache'),
  /** Docker engine the worker builds with. */
  DOCKER_HOST: z.string().default('unix:///var/run/docker.sock'),
  /** Docker config JSON (`auths`) holding the installation's registry credentials. */
  IMGBUILDER_REGISTRY_AUTH_FILE: z.string().optional(),
  /** Registry hosts reached over plain HTTP; localhost and 127.0.0.1 always are. */
  IMGBUILDER_INSECURE_REGISTRIES: list,
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
  /** A build running longer is stopped and fails. */
  IMGBUILDER_BUILD_TIMEOUT: duration('60m'),
  /** How long a worker may go silent (killed) before its build is handed to another worker. */
  IMGBUILDER_WORKER_LOCK_TIMEOUT: duration('30s'),
  /** How often workers check for builds whose worker died. */
  IMGBUILDER_STALLED_CHECK_INTERVAL: duration('15s'),
  /** How many times a build may lose its worker before it fails. */
  IMGBUILDER_MAX_BUILD_RESTARTS: int(2, 0),
  /**
   * How long Redis may stay unreachable before a worker exits non-zero (its supervisor restarts it) and API
   * streams end with UNAVAILABLE instead of waiting on.
   */
  IMGBUILDER_REDIS_GIVE_UP: duration('60s'),
  /** Grace period for running builds when a worker gets SIGTERM. */
  IMGBUILDER_WORKER_SHUTDOWN_GRACE: duration('5m'),
  /** Queued (not yet running) builds beyond which Build answers RESOURCE_EXHAUSTED. */
  IMGBUILDER_MAX_QUEUED_BUILDS: int(1000, 1),
  /** Builds one caller may have running at once across all workers; 0: no limit (fair share still applies). */
  IMGBUILDER_MAX_RUNNING_PER_CALLER: int(0, 0),
  /** Queued builds one caller may have; beyond, its Build answers RESOURCE_EXHAUSTED. 0: no limit. */
  IMGBUILDER_MAX_QUEUED_PER_CALLER: int(0, 0),
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
  /** Quiet Build streams repeat their `running` message this often, so proxies never see an idle stream. */
  IMGBUILDER_STREAM_KEEPALIVE: duration('15s'),
  /** A Build/Logs client that reads nothing this long is dropped, so slow readers cannot pin server memory. */
  IMGBUILDER_SLOW_CLIENT_TIMEOUT: duration('2m'),
  /** Build contexts larger than this fail. */
  IMGBUILDER_MAX_CONTEXT_BYTES: byteSize('1GiB'),
  /** Build contexts with more files than this fail. */
  IMGBUILDER_MAX_CONTEXT_FILES: int(200_000, 1),
  /** Initializers (every node of the tree, composites and prebuild git targets included) one request may hold. */
  IMGBUILDER_MAX_INITIALIZERS: int(64, 1),
  /** How deep composite initializers may nest. */
  IMGBUILDER_MAX_COMPOSITE_DEPTH: int(8, 1),
  /** Files one download initializer may list. */
  IMGBUILDER_MAX_DOWNLOAD_FILES: int(1000, 1),
  /** `git ls-remote` runs (resolving branches and HEAD to commits) one API process runs at the same time. */
  IMGBUILDER_LS_REMOTE_CONCURRENCY: int(8, 1),
  /** One `git ls-remote` taking longer is stopped; the request answers UNAVAILABLE. */
  IMGBUILDER_LS_REMOTE_TIMEOUT: duration('30s'),
  /**
   * Buckets snapshots may be read from besides the service's own `snapshots/` prefix: comma-separated `bucket` (any
   * key in it) or `bucket/prefix` (keys under that prefix only).
   */
  IMGBUILDER_SNAPSHOT_SOURCES: list,
  /**
   * The fetch policy (README "Security model"): CIDRs nothing fetched on a build's behalf may reach, besides the
   * refused-by-default loopback, link-local, metadata and unspecified addresses: the cluster's pod and service ranges.
   */
  IMGBUILDER_FETCH_DENY: fetchList('deny', 'comma-separated CIDRs (10.96.0.0/12)'),
  /** Re-allows what the fetch policy refuses: addresses, CIDRs, or host:port (127.0.0.1:8080, git.internal:22). */
  IMGBUILDER_FETCH_ALLOW: fetchList('allow', 'comma-separated CIDRs (10.1.0.0/16) or host:port (git.internal:22)'),
  /** Lets git remotes and downloads use file:// URLs and local paths (trusted single-user setups only). */
  IMGBUILDER_ALLOW_LOCAL_SOURCES: bool(false),
  /**
   * `# syntax=` frontends a Dockerfile may name: comma-separated image patterns, `repository` (any tag or digest) or
   * `repository:tag`, with `*` for any run of characters but `/`; Docker Hub names may be short. Empty: none.
   */
  IMGBUILDER_ALLOWED_FRONTENDS: z
    .string()
    .default('docker/dockerfile')
    .transform((s) => s.split(',').map((x) => x.trim()).filter(Boolean))
    .refine((entries) => entries.every((e) => /^[a-z0-9*][a-z0-9._*:/-]*(@sha256:[a-f0-9]{64})?$/.test(e)), 'expected image patterns like docker/dockerfile or registry.example.com/frontends/*:1.*'),
  /** 32 random bytes, base64: encrypts credentials carried in jobs. Required unless NODE_ENV=development. */
  IMGBUILDER_SECRET_KEY: z.string().optional(),
  /** Lets the API use NODE_ENV=development's fixed, public key while listening beyond loopback (never in production). */
  IMGBUILDER_INSECURE_DEV_KEY: bool(false),
  /** TLS for the gRPC port; with a CA, clients must present a certificate it signed. */
  IMGBUILDER_TLS_CERT: z.string().optional(),
  IMGBUILDER_TLS_KEY: z.string().optional(),
  IMGBUILDER_TLS_CA: z.string().optional(),
  /** Largest gRPC message accepted or sent. */
  IMGBUILDER_MAX_MESSAGE_BYTES: byteSize('16MiB'),
  /** Concurrent streams one connection may open. */
  IMGBUILDER_MAX_CONCURRENT_STREAMS: int(4096, 1),
  /** Largest snapshot upload through the CLI's upload service. */
  IMGBUILDER_MAX_UPLOAD_BYTES: byteSize('1GiB'),
  /** Snapshot uploads one API process receives at once; more get RESOURCE_EXHAUSTED. */
  IMGBUILDER_MAX_CONCURRENT_UPLOADS: int(16, 1),
  /** Temp-file bytes all uploads in progress on one API process may hold together. */
  IMGBUILDER_UPLOAD_DISK_BYTES: byteSize('4GiB'),
  /** An upload (receiving and storing) ends within this long, however slowly the client sends. */
  IMGBUILDER_UPLOAD_TIMEOUT: duration('30m'),
  /** Worker disk hygiene: images and build cache unused this long are pruned. */
  IMGBUILDER_PRUNE_AFTER: duration('24h'),
  IMGBUILDER_PRUNE_INTERVAL: duration('10m'),
  /**
   * Which unused tagged images disk hygiene removes: `all` (an engine dedicated to imgbuilder, pulled base images
   * included) or `own` (only images this installation built: an engine shared with others). Dangling images always.
   */
  IMGBUILDER_PRUNE_IMAGES: z.enum(['all', 'own']).default('all'),
  /**
   * What BuildInfo.log_info points at: `presigned` (a presigned GET of the log object) or `supervisor` (this API's
   * Gitpod-supervisor endpoint, so Gitpod's server streams the live log into its dashboard).
   */
  IMGBUILDER_LOG_INFO: z.enum(['presigned', 'supervisor']).default('presigned'),
  /** Origin under which clients reach the supervisor endpoint (log_info.url); required with IMGBUILDER_LOG_INFO=supervisor. */
  IMGBUILDER_PUBLIC_URL: z
    .string()
    .refine((s) => /^https?:\/\/[^/?#\s]+\/?$/.test(s), 'expected an origin like https://imgbuilder.example.com (Gitpod replaces any path)')
    .optional(),
  /**
   * Id of the key supervisor log tokens are signed with (derived from IMGBUILDER_SECRET_KEY and this id): a new id
   * revokes every token signed under the old one, without touching the secret key.
   */
  IMGBUILDER_LOG_TOKEN_KEY_ID: z.string().regex(/^[A-Za-z0-9_-]{1,16}$/, 'letters, digits, - and _ only (at most 16)').default('1'),
  /** The key id before the last rotation, still accepted while its tokens run out; unset after. */
  IMGBUILDER_LOG_TOKEN_PREVIOUS_KEY_ID: z.string().regex(/^[A-Za-z0-9_-]{1,16}$/, 'letters, digits, - and _ only (at most 16)').optional(),
  /** A finished build's supervisor log tokens stop working this long after its end. */
  IMGBUILDER_LOG_TOKEN_TTL_AFTER_END: duration('24h'),
  /** Listen address of the supervisor endpoint (HTTP, WebSocket) with IMGBUILDER_LOG_INFO=supervisor. */
  IMGBUILDER_SUPERVISOR_ADDR: hostPort('0.0.0.0:8081'),
  /**
   * JSON file listing access tokens (`{"tokens":[{"name","role":"viewer|builder|admin","sha256"}]}`): every gRPC call
   * but health then needs `authorization: Bearer <token>`. Unset: gRPC is open (deployments behind mTLS).
   */
  IMGBUILDER_TOKENS_FILE: z.string().optional(),
  /**
   * Dashboard (HTTP) listen address; empty turns it off. With IMGBUILDER_LOG_INFO=supervisor and the same address as
   * IMGBUILDER_SUPERVISOR_ADDR (both default to :8081), one server serves both.
   */
  IMGBUILDER_HTTP_ADDR: z.union([z.literal(''), hostPort('0.0.0.0:8081')]).default('0.0.0.0:8081'),
  /** Without a tokens file, the one token that opens the dashboard (viewer); without either the dashboard is off. */
  IMGBUILDER_DASHBOARD_TOKEN: z.string().min(16, 'at least 16 characters').optional(),
  /** How long a dashboard login (its session cookie) lasts. */
  IMGBUILDER_DASHBOARD_SESSION_TTL: duration('12h', 30 * 86_400_000),
  /** Log streams (SSE) one dashboard caller may hold open on one API process; more get 429. */
  IMGBUILDER_DASHBOARD_STREAMS_PER_CALLER: int(16, 1),
  /**
   * How long a finished build's event stream stays in Redis once its log object is complete (for readers still
   * catching up; a reader it expires under continues from the object).
   */
  IMGBUILDER_LOG_STREAM_TTL: duration('5m'),
  /** How often the reaper ends builds whose job is gone or that outlived their deadline (one process at a time). */
  IMGBUILDER_REAPER_INTERVAL: duration('15s'),
  /** How long a build may wait in the queue before the reaper ends it; added to IMGBUILDER_BUILD_TIMEOUT. */
  IMGBUILDER_MAX_QUEUE_WAIT: duration('6h'),
  /** Test only: the API exits right before queueing a build it created (the enqueue window of the orphan test). */
  IMGBUILDER_FAULT_EXIT_BEFORE_ENQUEUE: bool(false),
  LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  NODE_ENV: z.string().optional(),
});

/** EnvFields with the rules that span several of them (a process reading a few fields picks from EnvFields). */
export const EnvSchema = EnvFields.superRefine((env, ctx) => {
  // One key for API and workers; only development may fall back to the fixed key (SecretBox.fromKey).
  if (!env.IMGBUILDER_SECRET_KEY) {
    if (env.NODE_ENV !== 'development') ctx.addIssue({ code: 'custom', path: [], message: 'IMGBUILDER_SECRET_KEY is required (32 random bytes, base64: `openssl rand -base64 32`); set NODE_ENV=development to run without one' });
  } else if (Buffer.from(env.IMGBUILDER_SECRET_KEY, 'base64').length !== 32) {
    ctx.addIssue({ code: 'custom', path: [], message: 'IMGBUILDER_SECRET_KEY must be 32 bytes, base64-encoded (`openssl rand -base64 32`)' });
  }
});

export type Env = z.output<typeof EnvSchema>;

export { ConfigError, invalidConfiguration } from './config-error.js';

/** Parses the environment; the error names every bad variable and why. */
export function loadEnv(source: NodeJS.ProcessEnv = process.env): Env {
  // An empty variable means "not set", as shells and compose files tend to export empty values.
  // IMGBUILDER_S3_ENDPOINT, IMGBUILDER_METRICS_ADDR and IMGBUILDER_HTTP_ADDR are exceptions: empty there means AWS S3 / turned off.
  const keepEmpty = new Set(['IMGBUILDER_S3_ENDPOINT', 'IMGBUILDER_METRICS_ADDR', 'IMGBUILDER_HTTP_ADDR']);
  const cleaned = Object.fromEntries(Object.entries(source).filter(([k, v]) => v !== undefined && (v !== '' || keepEmpty.has(k))));
  if (cleaned.REDIS_URL === undefined) {
    const local = localRedisUrl(source.IMGBUILDER_LOCAL_DIR || '/tmp/imgbuilder-local');
    if (local) cleaned.REDIS_URL = local;
  }
  const result = EnvSchema.safeParse(cleaned);
  if (!result.success) {
    // Rules spanning several variables name them in their message.
    throw invalidConfiguration(result.error.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)));
  }
  return result.data;
}

/**
 * The local stack (infra/local/up.sh) protects its Redis with a generated password and leaves the URL in its state
 * dir, so `npm run api` / `npm run worker` work there without settings. Only a file this user owns (or root does)
 * and nobody else may write is believed.
 */
function localRedisUrl(stateDir: string): string | undefined {
  const file = join(stateDir, 'redis-url');
  try {
    const st = statSync(file);
    const uid = process.getuid?.() ?? 0;
    if ((st.uid !== uid && st.uid !== 0) || (st.mode & 0o022) !== 0) return undefined;
    const url = readFileSync(file, 'utf8').trim();
    return /^rediss?:\/\//.test(url) ? url : undefined;
  } catch {
    return undefined;
  }
}
