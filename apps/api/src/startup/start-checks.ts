import type { Env } from '@imgbuilder/common/config';
import { ConfigError } from '@imgbuilder/common/errors';

/** The addresses this API listens on, by the variable that sets each. */
function listeners(env: Env): [string, string][] {
  const out: [string, string][] = [['IMGBUILDER_GRPC_ADDR', env.IMGBUILDER_GRPC_ADDR]];
  const metrics = env.IMGBUILDER_METRICS_ADDR ?? '0.0.0.0:9090';
  if (metrics) out.push(['IMGBUILDER_METRICS_ADDR', metrics]);
  // The dashboard listens only with tokens to admit (startup/dashboard.ts).
  const dashboard = env.IMGBUILDER_TOKENS_FILE || env.IMGBUILDER_DASHBOARD_TOKEN;
  if (env.IMGBUILDER_HTTP_ADDR && dashboard) out.push(['IMGBUILDER_HTTP_ADDR', env.IMGBUILDER_HTTP_ADDR]);
  if (env.IMGBUILDER_LOG_INFO === 'supervisor') out.push(['IMGBUILDER_SUPERVISOR_ADDR', env.IMGBUILDER_SUPERVISOR_ADDR]);
  return out;
}

/** Whether HOST:PORT only accepts connections from this machine. */
export function isLoopback(addr: string): boolean {
  const host = addr.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1').toLowerCase();
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/**
 * The fixed development key (NODE_ENV=development without IMGBUILDER_SECRET_KEY) is public: with it anyone forges
 * supervisor log tokens and opens sealed job credentials. It is fine on a laptop, not on a reachable listener.
 */
export function refuseDevKeyOnNetwork(env: Env): void {
  if (env.IMGBUILDER_SECRET_KEY || env.IMGBUILDER_INSECURE_DEV_KEY) return;
  const open = listeners(env).filter(([, addr]) => !isLoopback(addr));
  if (!open.length) return;
  throw new ConfigError(
    `invalid configuration:\n  IMGBUILDER_SECRET_KEY: unset, so NODE_ENV=development uses a fixed, public key, and ${open.map(([k, a]) => `${k}=${a}`).join(', ')} ${open.length > 1 ? 'are' : 'is'} reachable from other machines: ` +
      'set IMGBUILDER_SECRET_KEY (`openssl rand -base64 32`), listen on 127.0.0.1 only, or accept the risk with IMGBUILDER_INSECURE_DEV_KEY=true',
  );
}

/**
 * The warning an API serving gRPC to anyone logs at start; undefined when a tokens file or mutual TLS (clients need a
 * certificate IMGBUILDER_TLS_CA signed: Gitpod's setup) guards it.
 */
export function openGrpcWarning(env: Env, hasTokens: boolean): string | undefined {
  if (hasTokens || env.IMGBUILDER_TLS_CA) return undefined;
  const where = isLoopback(env.IMGBUILDER_GRPC_ADDR) ? 'this machine' : 'anyone who reaches it';
  return `gRPC on ${env.IMGBUILDER_GRPC_ADDR} is open to ${where}: every rpc runs without an access token; set IMGBUILDER_TOKENS_FILE (\`imgbuilder token <name>\` makes entries) or require client certificates (IMGBUILDER_TLS_CA)`;
}
