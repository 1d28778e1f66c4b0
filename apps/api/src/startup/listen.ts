import type { Server as HttpServer } from 'node:http';
import type { Server as GrpcServer } from '@grpc/grpc-js';
import { startHealthServer } from '@imgbuilder/common/health-server';
import type { Logger } from '@imgbuilder/common/logger';
import { describeRedisUrl } from '@imgbuilder/common/redis';
import { addImageBuilder, bind, createGrpcServer } from '../grpc/server.js';
import { SupervisorLogServer } from '../logs/supervisor-log-server.js';
import type { ApiConfig } from './config.js';
import type { Backends } from './connect.js';
import { startDashboard, type RunningDashboard } from './dashboard.js';
import type { Services } from './services.js';
import { openGrpcWarning } from './start-checks.js';

/** Every server the API listens with; the optional ones may be off or failed to start. */
export interface Listeners {
  grpc: GrpcServer;
  /** Health and metrics (IMGBUILDER_METRICS_ADDR). */
  http?: HttpServer;
  dashboard?: RunningDashboard;
  supervisor?: SupervisorLogServer;
}

/** Binds the gRPC port, then the HTTP servers beside it: health and metrics, the dashboard, the supervisor endpoint. */
export async function listen(cfg: ApiConfig, backends: Backends, services: Services, log: Logger): Promise<Listeners> {
  const { env } = cfg;
  const grpc = createGrpcServer({ maxMessageBytes: env.IMGBUILDER_MAX_MESSAGE_BYTES, maxConcurrentStreams: env.IMGBUILDER_MAX_CONCURRENT_STREAMS });
  addImageBuilder(grpc, services.imageBuilder.handlers(), services.guard);
  services.upload.register(grpc, services.guard);
  services.control.register(grpc, services.guard);
  services.cache.register(grpc, services.guard);
  services.health.register(grpc);
  const port = await bind(grpc, env.IMGBUILDER_GRPC_ADDR, cfg.creds);
  const metricsAddr = env.IMGBUILDER_METRICS_ADDR ?? '0.0.0.0:9090';
  // Several processes on one host would fight over the default port; metrics are not worth failing the API for.
  const http = metricsAddr
    ? await startHealthServer({ addr: metricsAddr, registry: backends.metrics.registry, ready: backends.ready }).catch((err: Error) => {
        log.warn({ err: err.message, addr: metricsAddr }, 'health/metrics HTTP server not started (set IMGBUILDER_METRICS_ADDR)');
        return undefined;
      })
    : undefined;
  const dashboard = await startDashboard(cfg, backends, services.canceller, log);
  const supervisor = await startSupervisor(cfg, backends, dashboard, log);
  const open = openGrpcWarning(env, Boolean(cfg.tokens));
  if (open) log.warn(open);
  log.info(
    { addr: env.IMGBUILDER_GRPC_ADDR, port, redis: describeRedisUrl(env.REDIS_URL), metrics: metricsAddr || 'off', tls: Boolean(env.IMGBUILDER_TLS_CERT), tokens: cfg.tokens ? 'required' : 'off' },
    'imgbuilder API listening',
  );
  return { grpc, http, dashboard, supervisor };
}

/** With IMGBUILDER_LOG_INFO=supervisor: the supervisor log endpoint, on the dashboard's server when they share an address. */
async function startSupervisor(cfg: ApiConfig, backends: Backends, dashboard: RunningDashboard | undefined, log: Logger): Promise<SupervisorLogServer | undefined> {
  const { env, supervisorLogs } = cfg;
  if (!supervisorLogs) return undefined;
  const { store, logStore, hub } = backends;
  // Both default to :8081: one address means one HTTP server, the dashboard's, also taking the supervisor's upgrades.
  const shared = dashboard && env.IMGBUILDER_SUPERVISOR_ADDR === env.IMGBUILDER_HTTP_ADDR ? dashboard.server.http : undefined;
  const supervisor = new SupervisorLogServer({ store, logStore, hub, tokens: supervisorLogs.tokens, log, slowClientTimeoutMs: env.IMGBUILDER_SLOW_CLIENT_TIMEOUT, shared });
  const port = shared ? dashboard?.port : await supervisor.listen(env.IMGBUILDER_SUPERVISOR_ADDR);
  log.info({ addr: env.IMGBUILDER_SUPERVISOR_ADDR, port, publicUrl: supervisorLogs.publicUrl }, 'supervisor log endpoint listening');
  return supervisor;
}
