import { status as GrpcStatus } from '@grpc/grpc-js';
import type { Logger } from '@imgbuilder/common/logger';
import { CancelRequests, FairShare, fairShareTtlMs } from '@imgbuilder/common/build-life';
import { RegistryClient } from '@imgbuilder/common/registry-client';
import { BuildPlanner } from '../plan/build-plan.js';
import { GitRemoteResolver } from '../plan/git-remote-resolver.js';
import { BuildStarter } from '../queue/start-or-join.js';
import { BuildCanceller } from '../control/build-canceller.js';
import { BuildControl } from '../grpc/build-control-service.js';
import { LogInfoIssuer } from '../logs/log-info.js';
import { ImageBuilderService } from '../grpc/image-builder-service.js';
import { guardService } from '../grpc/auth.js';
import { checkInstallationAuth } from '../grpc/installation-auth.js';
import { HealthService, type Guard } from '../grpc/server.js';
import { UploadService } from '../grpc/upload-service.js';
import { CacheService } from '../grpc/cache-service.js';
import { CacheRefs } from '@imgbuilder/common/cache-refs';
import { cacheRepositoryOf } from '@imgbuilder/common/config';
import { pushCredentials } from '@imgbuilder/common/registry-auth';
import type { ApiConfig } from './config.js';
import type { Backends } from './connect.js';

/** The rpc services and the access check every one of them passes through. */
export interface Services {
  imageBuilder: ImageBuilderService;
  upload: UploadService;
  /** imgbuilder.control.v1.BuildControl (cancel). */
  control: BuildControl;
  /** Cancels builds for the CancelBuild rpc and the dashboard's Cancel button. */
  canceller: BuildCanceller;
  /** imgbuilder.cache.v1: the layer cache refs, for operators (admin). */
  cache: CacheService;
  health: HealthService;
  /** With IMGBUILDER_TOKENS_FILE: each rpc needs a token of its role (auth.ts). */
  guard: Guard | undefined;
}

/** Makes the rpc services; `builder.ImageBuilder` from its parts: planner, starter, log info; BuildControl from the canceller. */
export function makeServices(cfg: ApiConfig, backends: Backends, log: Logger): Services {
  const { env, installation, secrets } = cfg;
  const { redis, store, hub, queue, logStore, metrics } = backends;
  const fair = new FairShare(redis, cfg.keys, fairShareTtlMs(env.IMGBUILDER_MAX_QUEUE_WAIT, env.IMGBUILDER_BUILD_TIMEOUT));
  const registry = new RegistryClient({ insecureHosts: env.IMGBUILDER_INSECURE_REGISTRIES });
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
    {
      registry,
      git: new GitRemoteResolver({ allowLocal: env.IMGBUILDER_ALLOW_LOCAL_SOURCES, concurrency: env.IMGBUILDER_LS_REMOTE_CONCURRENCY, timeoutMs: env.IMGBUILDER_LS_REMOTE_TIMEOUT, cacheMs: env.IMGBUILDER_LS_REMOTE_CACHE }),
      log,
    },
  );
  const starter = new BuildStarter(
    {
      retentionMs: env.IMGBUILDER_LOG_RETENTION,
      buildTimeoutMs: env.IMGBUILDER_BUILD_TIMEOUT,
      maxQueueWaitMs: env.IMGBUILDER_MAX_QUEUE_WAIT,
      maxQueued: env.IMGBUILDER_MAX_QUEUED_BUILDS,
      maxQueuedPerCaller: env.IMGBUILDER_MAX_QUEUED_PER_CALLER,
      faultExitBeforeEnqueue: env.IMGBUILDER_FAULT_EXIT_BEFORE_ENQUEUE,
    },
    { store, queue, logStore, fair, secrets, metrics },
  );
  const logInfo = new LogInfoIssuer({ logUrlTtlMs: env.IMGBUILDER_LOG_URL_TTL, supervisorLogs: cfg.supervisorLogs }, logStore);
  const imageBuilder = new ImageBuilderService(
    {
      workspaceRepository: env.IMGBUILDER_WORKSPACE_REPOSITORY,
      baseRepository: env.IMGBUILDER_BASE_REPOSITORY,
      keepaliveMs: env.IMGBUILDER_STREAM_KEEPALIVE,
      slowClientTimeoutMs: env.IMGBUILDER_SLOW_CLIENT_TIMEOUT,
    },
    { planner, starter, store, hub, logStore, logInfo, metrics, log },
  );
  const upload = new UploadService({
    objects: backends.objects,
    log,
    maxBytes: env.IMGBUILDER_MAX_UPLOAD_BYTES,
    maxConcurrent: env.IMGBUILDER_MAX_CONCURRENT_UPLOADS,
    maxDiskBytes: env.IMGBUILDER_UPLOAD_DISK_BYTES,
    timeoutMs: env.IMGBUILDER_UPLOAD_TIMEOUT,
  });
  const canceller = new BuildCanceller({ store, cancels: new CancelRequests(redis, cfg.keys), queue, hub, log, retentionMs: env.IMGBUILDER_LOG_RETENTION });
  const control = new BuildControl(canceller, { metrics, log });
  const health = new HealthService(['', 'builder.ImageBuilder'], backends.ready);
  const cacheRepository = cacheRepositoryOf(env);
  const cacheRefs = new CacheRefs({ redis, keys: cfg.keys, registry, repository: cacheRepository, credentials: pushCredentials(installation, cacheRepository) });
  const cache = new CacheService({ refs: cacheRefs, repository: cacheRepository, retentionMs: env.IMGBUILDER_CACHE_RETENTION, log });
  return { imageBuilder, upload, control, canceller, cache, health, guard: tokenGuard(cfg, backends) };
}

/** Token checks for every rpc but health, when there is a tokens file; and installation credentials only for callers allowed them. */
function tokenGuard({ tokens, installation }: ApiConfig, { metrics }: Backends): Guard | undefined {
  if (!tokens) return undefined;
  return (definition, impl) =>
    guardService(definition, impl, tokens, {
      admit: (_method, request, caller) => checkInstallationAuth(request, caller, installation),
      refused: (rpc, code) => metrics.callStarted(rpc)(GrpcStatus[code]),
    });
}
