import { QueueSamples } from '@imgbuilder/common/build-life';
import { AccessTokens, hashToken, type Caller } from '@imgbuilder/common/access-tokens';
import type { Logger } from '@imgbuilder/common/logger';
import type { BuildCanceller } from '../control/build-canceller.js';
import { buildCaller } from '../grpc/caller.js';
import { DashboardData } from '../dashboard/dashboard-data.js';
import { DashboardServer } from '../dashboard/dashboard-server.js';
import { DashboardSessions } from '../dashboard/session.js';
import { deriveKey } from '@imgbuilder/common/secret-box';
import type { ApiConfig } from './config.js';
import type { Backends } from './connect.js';

/** The dashboard started: its HTTP server, the data it samples and the port it got. */
export interface RunningDashboard {
  server: DashboardServer;
  data: DashboardData;
  port: number;
}

/**
 * The operators' dashboard on IMGBUILDER_HTTP_ADDR. It needs tokens: those of IMGBUILDER_TOKENS_FILE, else the one
 * IMGBUILDER_DASHBOARD_TOKEN (role viewer); with neither it stays off. Like metrics, a port taken by another process
 * on the host is logged, not fatal.
 */
export async function startDashboard({ env, keys, tokens }: ApiConfig, backends: Backends, canceller: BuildCanceller, log: Logger): Promise<RunningDashboard | undefined> {
  const { store, logStore, hub, objects, redis, queue } = backends;
  if (!env.IMGBUILDER_HTTP_ADDR) return undefined;
  const viewers = tokens ?? (env.IMGBUILDER_DASHBOARD_TOKEN ? AccessTokens.fromEntries([{ name: 'dashboard', role: 'viewer', sha256: hashToken(env.IMGBUILDER_DASHBOARD_TOKEN) }]) : undefined);
  if (!viewers) {
    log.info({ addr: env.IMGBUILDER_HTTP_ADDR }, 'dashboard off: it needs IMGBUILDER_TOKENS_FILE or IMGBUILDER_DASHBOARD_TOKEN');
    return undefined;
  }
  // The Cancel button acts as the session's token, calling without triggered_by (caller.ts). Without a tokens file the
  // gRPC API lets anyone cancel, and so does the dashboard's one viewer token, recorded under its name.
  const cancel = (id: string, session: Caller) => canceller.cancel(id, tokens ? session : undefined, tokens ? buildCaller(session, '') : buildCaller(undefined, session.name));
  const data = new DashboardData({ store, samples: new QueueSamples(redis, keys), queue, retentionMs: env.IMGBUILDER_LOG_RETENTION, log });
  const server = new DashboardServer({
    store,
    logStore,
    hub,
    objects,
    data,
    log,
    tokens: viewers,
    cancel,
    sessions: new DashboardSessions(deriveKey(env.IMGBUILDER_SECRET_KEY, 'dashboard sessions v1'), viewers, env.IMGBUILDER_DASHBOARD_SESSION_TTL),
    logUrlTtlMs: env.IMGBUILDER_LOG_URL_TTL,
    slowClientTimeoutMs: env.IMGBUILDER_SLOW_CLIENT_TIMEOUT,
    maxStreamsPerCaller: env.IMGBUILDER_DASHBOARD_STREAMS_PER_CALLER,
    traceUrl: env.IMGBUILDER_TRACE_URL,
  });
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
