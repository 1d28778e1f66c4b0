import { Queue } from 'bullmq';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { loadEnv, ConfigError, type Env } from '@imgbuilder/common/config';
import { FetchPolicy, installFetchPolicy } from '@imgbuilder/common/fetch-policy';
import { createLogger } from '@imgbuilder/common/logger';
import { redisConnector, describeRedisUrl, watchOutage, type RedisClient } from '@imgbuilder/common/redis';
import { QUEUE_NAME, redisKeys, type RedisKeys } from '@imgbuilder/common/redis-keys';
import { BuildStore } from '@imgbuilder/common/build-store';
import { CancelRequests } from '@imgbuilder/common/build-cancel';
import { FairShare } from '@imgbuilder/common/fair-share';
import { RegistryClient } from '@imgbuilder/common/registry-client';
import { loadCredentialFile } from '@imgbuilder/common/registry-auth';
import { ObjectStore, objectStoreOptions } from '@imgbuilder/common/object-store';
import { LogStore } from '@imgbuilder/common/log-store';
import { SecretBox } from '@imgbuilder/common/secret-box';
import { startHealthServer } from '@imgbuilder/common/health-server';
import { formatDuration } from '@imgbuilder/common/duration';
import type { BuildJobData } from '@imgbuilder/common/build-job';
import { BuildPlanner } from './plan/build-plan.js';
import { EventHub } from './logs/event-hub.js';
import { GitRemoteResolver } from './plan/git-remote-resolver.js';
import { ImageBuilderService } from './grpc/image-builder-service.js';
import { ApiMetrics } from './metrics.js';
import { addImageBuilder, bind, createGrpcServer, HealthService, serverCredentials, type Guard } from './grpc/server.js';
import { LogTokens } from './logs/log-token.js';
import { SupervisorLogServer } from './logs/supervisor-log-server.js';
import { UploadService } from './grpc/upload-service.js';
import { AccessTokens, hashToken, type Caller } from '@imgbuilder/common/access-tokens';
import type { BuildLogDeps } from './logs/build-log.js';
import { DashboardData } from './dashboard/dashboard-data.js';
import { DashboardServer } from './dashboard/dashboard-server.js';
import { guardService } from './grpc/auth.js';
import { BuildCanceller } from './control/build-canceller.js';
import { BuildControl } from './grpc/build-control-service.js';

const log = createLogger('imgbuilder-api');

async function main(): Promise<void> {
  const env = loadEnv();
  // Every fetch this process makes on a build's behalf obeys it (git, downloads, registries).
  installFetchPolicy(FetchPolicy.fromEnv(env));
  // The configured level; child loggers made from here on inherit it.
  log.level = env.LOG_LEVEL;
  const connectRedis = redisConnector(env.REDIS_URL, env.IMGBUILDER_REDIS_TLS_CA);
  const installation = loadCredentialFile(env.IMGBUILDER_REGISTRY_AUTH_FILE);
  const secrets = SecretBox.fromKey(env.IMGBUILDER_SECRET_KEY);
  const creds = serverCredentials({ cert: env.IMGBUILDER_TLS_CERT, key: env.IMGBUILDER_TLS_KEY, ca: env.IMGBUILDER_TLS_CA });
  const keys = redisKeys(env.IMGBUILDER_REDIS_NAMESPACE);

  const redis = connectRedis('imgbuilder-api');
  const pubsub = connectRedis('imgbuilder-api-sub', { blocking: true });
  redis.on('error', (err) => log.warn({ err: err.message }, 'redis connection error'));
  pubsub.on('error', (err) => log.warn({ err: err.message }, 'redis subscriber error'));
  const queue = new Queue<BuildJobData>(QUEUE_NAME, { connection: connectRedis('imgbuilder-api-queue'), prefix: keys.queuePrefix });
  queue.on('error', (err) => log.warn({ err: err.message }, 'queue error'));

  const store = new BuildStore(redis, keys);
  const outage = watchOutage(redis);
  // Open streams wait through a Redis restart, but not for ever: past the give-up they end UNAVAILABLE (retryable).
  const metrics = new ApiMetrics(queue);
  const hub = new EventHub(store, pubsub, {
    onLive: (batch) => metrics.logsRead(batch),
    unavailable: () =>
      outage.downForMs() > env.IMGBUILDER_REDIS_GIVE_UP ? `the build queue (Redis) has been unreachable for over ${formatDuration(env.IMGBUILDER_REDIS_GIVE_UP)}; retry` : undefined,
  });
  const registry = new RegistryClient({ insecureHosts: env.IMGBUILDER_INSECURE_REGISTRIES });
  const fair = new FairShare(redis, keys, env.IMGBUILDER_MAX_QUEUE_WAIT + env.IMGBUILDER_BUILD_TIMEOUT + 10 * 60_000);
  const objects = new ObjectStore(objectStoreOptions(env));
  const logStore = new LogStore(redis, keys, objects);
  objects.ensureBucket().catch((err: Error) => log.warn({ err: err.message }, 'object store not reachable yet; log URLs will be presigned anyway'));
  const planner = new BuildPlanner(
    {
      baseRepository: env.IMGBUILDER_BASE_REPOSITORY,
      workspaceRepository: env.IMGBUILDER_WORKSPACE_REPOSITORY,
      installation,
      allowLocalSources: env.IMGBUILDER_ALLOW_LOCAL_SOURCES,
      maxInitializers: env.IMGBUILDER_MAX_INITIALIZERS,
      maxCompositeDepth: env.IMGBUILDER_MAX_COMPOSITE_DEPTH,
      maxDownloadFiles: env.IMGBUILDER_MAX_DOWNLOAD_FILES,
      snapshots: { ownBucket: env.IMGBUILDER_S3_BUCKET, sources: env.IMGBUILDER_SNAPSHOT_SOURCES },
    },
    registry,
    new GitRemoteResolver({
      allowLocal: env.IMGBUILDER_ALLOW_LOCAL_SOURCES,
      concurrency: env.IMGBUILDER_LS_REMOTE_CONCURRENCY,
      timeoutMs: env.IMGBUILDER_LS_REMOTE_TIMEOUT,
    }),
  );
  // Opt-in: Gitpod's server streams live build logs from a "supervisor"; this API plays one (supervisor-log-server.ts).
  const supervisorLogs =
    env.IMGBUILDER_LOG_INFO === 'supervisor'
      ? { publicUrl: requirePublicUrl(env.IMGBUILDER_PUBLIC_URL), tokens: new LogTokens(secrets, env.IMGBUILDER_LOG_URL_TTL) }
      : undefined;
  const service = new ImageBuilderService(
    {
      workspaceRepository: env.IMGBUILDER_WORKSPACE_REPOSITORY,
      baseRepository: env.IMGBUILDER_BASE_REPOSITORY,
      installation,
      logUrlTtlMs: env.IMGBUILDER_LOG_URL_TTL,
      retentionMs: env.IMGBUILDER_LOG_RETENTION,
      buildTimeoutMs: env.IMGBUILDER_BUILD_TIMEOUT,
      maxQueueWaitMs: env.IMGBUILDER_MAX_QUEUE_WAIT,
      faultExitBeforeEnqueue: env.IMGBUILDER_FAULT_EXIT_BEFORE_ENQUEUE,
      maxQueued: env.IMGBUILDER_MAX_QUEUED_BUILDS,
      maxQueuedPerCaller: env.IMGBUILDER_MAX_QUEUED_PER_CALLER,
      keepaliveMs: env.IMGBUILDER_STREAM_KEEPALIVE,
      slowClientTimeoutMs: env.IMGBUILDER_SLOW_CLIENT_TIMEOUT,
      supervisorLogs,
    },
    { planner, registry, store, hub, queue, fair, logStore, secrets, metrics, log },
  );
  const canceller = new BuildCanceller({ store, cancels: new CancelRequests(redis, keys), fair, queue, hub, log, retentionMs: env.IMGBUILDER_LOG_RETENTION });

  const ready = async () => (await redis.ping()) === 'PONG';
  const server = createGrpcServer({ maxMessageBytes: env.IMGBUILDER_MAX_MESSAGE_BYTES, maxConcurrentStreams: env.IMGBUILDER_MAX_CONCURRENT_STREAMS });
  // With a tokens file every rpc but health needs a token of the right role; without one gRPC stays open (mTLS).
  const tokens = env.IMGBUILDER_TOKENS_FILE ? AccessTokens.load(env.IMGBUILDER_TOKENS_FILE) : undefined;
  const guard: Guard | undefined = tokens
    ? (definition, impl) =>
        guardService(definition, impl, tokens, {
          admit: (method, call, caller) => {
            const req = call.request as { triggeredBy?: string } | undefined;
            if (method === 'build' && req && !req.triggeredBy) req.triggeredBy = caller.name;
          },
          refused: (rpc, code) => metrics.callStarted(rpc)(GrpcStatus[code]),
        })
    : undefined;
  addImageBuilder(server, service.handlers(), guard);
  new UploadService({
    objects,
    log,
    maxBytes: env.IMGBUILDER_MAX_UPLOAD_BYTES,
    maxConcurrent: env.IMGBUILDER_MAX_CONCURRENT_UPLOADS,
    maxDiskBytes: env.IMGBUILDER_UPLOAD_DISK_BYTES,
    timeoutMs: env.IMGBUILDER_UPLOAD_TIMEOUT,
  }).register(server, guard);
  new BuildControl(canceller, metrics, log).register(server, guard);
  new HealthService(['', 'builder.ImageBuilder'], ready).register(server);
  const port = await bind(server, env.IMGBUILDER_GRPC_ADDR, creds);
  const metricsAddr = env.IMGBUILDER_METRICS_ADDR ?? '0.0.0.0:9090';
  // Several processes on one host would fight over the default port; metrics are not worth failing the API for.
  const http = metricsAddr
    ? await startHealthServer({ addr: metricsAddr, registry: metrics.registry, ready }).catch((err: Error) => {
        log.warn({ err: err.message, addr: metricsAddr }, 'health/metrics HTTP server not started (set IMGBUILDER_METRICS_ADDR)');
        return undefined;
      })
    : undefined;
  const dashboard = await startDashboard(env, { tokens, store, logStore, hub, objects, redis, keys, queue, canceller });
  // Both default to :8081: one address means one HTTP server, the dashboard's, also taking the supervisor's upgrades.
  const shared = dashboard && env.IMGBUILDER_SUPERVISOR_ADDR === env.IMGBUILDER_HTTP_ADDR ? dashboard.server.http : undefined;
  const supervisor = supervisorLogs ? new SupervisorLogServer({ store, logStore, hub, tokens: supervisorLogs.tokens, log, slowClientTimeoutMs: env.IMGBUILDER_SLOW_CLIENT_TIMEOUT, shared }) : undefined;
  const supervisorPort = shared ? dashboard?.port : await supervisor?.listen(env.IMGBUILDER_SUPERVISOR_ADDR);
  if (supervisor) log.info({ addr: env.IMGBUILDER_SUPERVISOR_ADDR, port: supervisorPort, publicUrl: supervisorLogs?.publicUrl }, 'supervisor log endpoint listening');
  log.info({ addr: env.IMGBUILDER_GRPC_ADDR, port, redis: describeRedisUrl(env.REDIS_URL), metrics: metricsAddr || 'off', tls: Boolean(env.IMGBUILDER_TLS_CERT), tokens: tokens ? 'required' : 'off' }, 'imgbuilder API listening');

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down: no new calls, open streams get 10s');
    // Streams that never close (clients that stopped reading) must not keep the pod alive past its grace period.
    const force = setTimeout(() => {
      server.forceShutdown();
      process.exit(0);
    }, 10_000);
    force.unref();
    server.tryShutdown(async () => {
      http?.close();
      supervisor?.close();
      dashboard?.server.close();
      dashboard?.data.stop();
      await queue.close().catch(() => undefined);
      redis.disconnect();
      pubsub.disconnect();
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

/** What the dashboard is made from, beside the configuration. */
interface DashboardParts extends BuildLogDeps {
  /** The tokens of IMGBUILDER_TOKENS_FILE, when there is one. */
  tokens: AccessTokens | undefined;
  objects: ObjectStore;
  redis: RedisClient;
  keys: RedisKeys;
  queue: Queue;
  canceller: BuildCanceller;
}

/**
 * The operators' dashboard on IMGBUILDER_HTTP_ADDR. It needs tokens: those of IMGBUILDER_TOKENS_FILE, else the one
 * IMGBUILDER_DASHBOARD_TOKEN (role viewer); with neither it stays off. Like metrics, a port taken by another process
 * on the host is logged, not fatal.
 */
async function startDashboard(env: Env, parts: DashboardParts) {
  const { tokens, store, logStore, hub, objects, redis, keys, queue, canceller } = parts;
  if (!env.IMGBUILDER_HTTP_ADDR) return undefined;
  const viewers = tokens ?? (env.IMGBUILDER_DASHBOARD_TOKEN ? AccessTokens.fromEntries([{ name: 'dashboard', role: 'viewer', sha256: hashToken(env.IMGBUILDER_DASHBOARD_TOKEN) }]) : undefined);
  if (!viewers) {
    log.info({ addr: env.IMGBUILDER_HTTP_ADDR }, 'dashboard off: it needs IMGBUILDER_TOKENS_FILE or IMGBUILDER_DASHBOARD_TOKEN');
    return undefined;
  }
  const data = new DashboardData({ redis, store, keys, queue, retentionMs: env.IMGBUILDER_LOG_RETENTION, log });
  // Without a tokens file the gRPC API lets anyone cancel, and so does the dashboard's one viewer token.
  const cancel = (id: string, caller: Caller) => canceller.cancel(id, tokens ? caller : undefined, caller.name);
  const server = new DashboardServer({ store, logStore, hub, objects, data, log, tokens: viewers, cancel, logUrlTtlMs: env.IMGBUILDER_LOG_URL_TTL, secureCookies: env.IMGBUILDER_PUBLIC_URL?.startsWith('https:') ?? false });
  try {
    const port = await server.listen(env.IMGBUILDER_HTTP_ADDR);
    data.startSampling();
    log.info({ addr: env.IMGBUILDER_HTTP_ADDR, port }, 'dashboard listening');
    return { server, data, port };
  } catch (err) {
    log.warn({ err: (err as Error).message, addr: env.IMGBUILDER_HTTP_ADDR }, 'dashboard not started (set IMGBUILDER_HTTP_ADDR)');
    return undefined;
  }
}

function requirePublicUrl(url: string | undefined): string {
  if (!url) throw new ConfigError('invalid configuration:\n  IMGBUILDER_PUBLIC_URL: required with IMGBUILDER_LOG_INFO=supervisor (the origin Gitpod reaches this API\'s supervisor endpoint at)');
  return url;
}

main().catch((err) => {
  if (err instanceof ConfigError) log.fatal(err.message);
  else log.fatal({ err }, 'API failed to start');
  process.exit(1);
});
