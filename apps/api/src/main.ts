import { Queue } from 'bullmq';
import { loadEnv, ConfigError } from '@imgbuilder/common/config';
import { createLogger } from '@imgbuilder/common/logger';
import { createRedis, describeRedisUrl, watchOutage } from '@imgbuilder/common/redis';
import { QUEUE_NAME, QUEUE_PREFIX } from '@imgbuilder/common/redis-keys';
import { BuildStore } from '@imgbuilder/common/build-store';
import { RegistryClient } from '@imgbuilder/common/registry-client';
import { loadCredentialFile } from '@imgbuilder/common/registry-auth';
import { ObjectStore } from '@imgbuilder/common/object-store';
import { LogStore } from '@imgbuilder/common/log-store';
import { SecretBox } from '@imgbuilder/common/secret-box';
import { startHealthServer } from '@imgbuilder/common/health-server';
import { formatDuration } from '@imgbuilder/common/duration';
import type { BuildJobData } from '@imgbuilder/common/build-job';
import { BuildPlanner } from './build-plan.js';
import { EventHub } from './event-hub.js';
import { GitRemoteResolver } from './git-remote-resolver.js';
import { ImageBuilderService } from './image-builder-service.js';
import { ApiMetrics } from './metrics.js';
import { addImageBuilder, bind, createGrpcServer, HealthService, serverCredentials } from './server.js';
import { LogTokens } from './log-token.js';
import { SupervisorLogServer } from './supervisor-log-server.js';
import { UploadService } from './upload-service.js';

const log = createLogger('imgbuilder-api');

async function main(): Promise<void> {
  const env = loadEnv();
  const installation = loadCredentialFile(env.IMGBUILDER_REGISTRY_AUTH_FILE);
  const secrets = SecretBox.fromEnv(env.IMGBUILDER_SECRET_KEY, env.NODE_ENV);
  const creds = serverCredentials(env);

  const redis = createRedis(env.REDIS_URL, { name: 'imgbuilder-api', tlsCa: env.IMGBUILDER_REDIS_TLS_CA });
  const sub = createRedis(env.REDIS_URL, { name: 'imgbuilder-api-sub', blocking: true, tlsCa: env.IMGBUILDER_REDIS_TLS_CA });
  redis.on('error', (err) => log.warn({ err: err.message }, 'redis connection error'));
  sub.on('error', (err) => log.warn({ err: err.message }, 'redis subscriber error'));
  const queue = new Queue<BuildJobData>(QUEUE_NAME, { connection: createRedis(env.REDIS_URL, { name: 'imgbuilder-api-queue', tlsCa: env.IMGBUILDER_REDIS_TLS_CA }), prefix: QUEUE_PREFIX });
  queue.on('error', (err) => log.warn({ err: err.message }, 'queue error'));

  const store = new BuildStore(redis);
  const outage = watchOutage(redis);
  // Open streams wait through a Redis restart, but not for ever: past the give-up they end UNAVAILABLE (retryable).
  const hub = new EventHub(store, sub, {
    unavailable: () =>
      outage.downForMs() > env.IMGBUILDER_REDIS_GIVE_UP ? `the build queue (Redis) has been unreachable for over ${formatDuration(env.IMGBUILDER_REDIS_GIVE_UP)}; retry` : undefined,
  });
  const registry = new RegistryClient({ insecureHosts: env.IMGBUILDER_INSECURE_REGISTRIES });
  const objects = new ObjectStore(env);
  const logStore = new LogStore(redis, objects);
  objects.ensureBucket().catch((err: Error) => log.warn({ err: err.message }, 'object store not reachable yet; log URLs will be presigned anyway'));
  const metrics = new ApiMetrics(queue);
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
      keepaliveMs: env.IMGBUILDER_STREAM_KEEPALIVE,
      slowClientTimeoutMs: env.IMGBUILDER_SLOW_CLIENT_TIMEOUT,
      supervisorLogs,
    },
    planner,
    registry,
    store,
    hub,
    queue,
    logStore,
    secrets,
    metrics,
    log,
  );

  const ready = async () => (await redis.ping()) === 'PONG';
  const server = createGrpcServer(env);
  addImageBuilder(server, service.handlers());
  new UploadService(objects, env.IMGBUILDER_MAX_UPLOAD_BYTES, log, {
    maxConcurrent: env.IMGBUILDER_MAX_CONCURRENT_UPLOADS,
    maxDiskBytes: env.IMGBUILDER_UPLOAD_DISK_BYTES,
    timeoutMs: env.IMGBUILDER_UPLOAD_TIMEOUT,
  }).register(server);
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
  const supervisor = supervisorLogs ? new SupervisorLogServer({ store, logStore, hub }, supervisorLogs.tokens, env.IMGBUILDER_SLOW_CLIENT_TIMEOUT, log) : undefined;
  const supervisorPort = await supervisor?.listen(env.IMGBUILDER_SUPERVISOR_ADDR);
  if (supervisor) log.info({ addr: env.IMGBUILDER_SUPERVISOR_ADDR, port: supervisorPort, publicUrl: supervisorLogs?.publicUrl }, 'supervisor log endpoint listening');
  log.info({ addr: env.IMGBUILDER_GRPC_ADDR, port, redis: describeRedisUrl(env.REDIS_URL), metrics: metricsAddr || 'off', tls: Boolean(env.IMGBUILDER_TLS_CERT) }, 'imgbuilder API listening');

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
      await queue.close().catch(() => undefined);
      redis.disconnect();
      sub.disconnect();
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
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
