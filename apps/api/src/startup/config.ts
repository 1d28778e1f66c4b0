import type { ServerCredentials } from '@grpc/grpc-js';
import { ConfigError } from '@imgbuilder/common/errors';
import type { Logger } from '@imgbuilder/common/logger';
import { loadProcessConfig, type ProcessConfig } from '@imgbuilder/common/process-config';
import { AccessTokens } from '@imgbuilder/common/access-tokens';
import { serverCredentials } from '../grpc/server.js';
import { LogTokens, logTokenKeys } from '../logs/log-token.js';
import { refuseDevKeyOnNetwork } from './start-checks.js';

/** The API's configuration: the environment and what the files it names hold. */
export interface ApiConfig extends ProcessConfig {
  /** The gRPC port's TLS. */
  creds: ServerCredentials;
  /** The tokens of IMGBUILDER_TOKENS_FILE, when there is one. */
  tokens: AccessTokens | undefined;
  /** IMGBUILDER_LOG_INFO=supervisor: the origin log_info names and the tokens it hands out. */
  supervisorLogs: { publicUrl: string; tokens: LogTokens } | undefined;
}

/** Reads the configuration, failing before anything connects, and sets up what the whole process obeys. */
export function configure(log: Logger): ApiConfig {
  const base = loadProcessConfig(log);
  const { env } = base;
  refuseDevKeyOnNetwork(env);
  return {
    ...base,
    creds: serverCredentials({ cert: env.IMGBUILDER_TLS_CERT, key: env.IMGBUILDER_TLS_KEY, ca: env.IMGBUILDER_TLS_CA }),
    // With a tokens file every rpc but health needs a token of the right role; without one gRPC stays open (mTLS).
    tokens: env.IMGBUILDER_TOKENS_FILE ? AccessTokens.load(env.IMGBUILDER_TOKENS_FILE) : undefined,
    // Opt-in: Gitpod's server streams live build logs from a "supervisor"; this API plays one (supervisor-log-server.ts).
    supervisorLogs:
      env.IMGBUILDER_LOG_INFO === 'supervisor'
        ? { publicUrl: requirePublicUrl(env.IMGBUILDER_PUBLIC_URL), tokens: new LogTokens(logTokenKeys(env.IMGBUILDER_SECRET_KEY, env.IMGBUILDER_LOG_TOKEN_KEY_ID, env.IMGBUILDER_LOG_TOKEN_PREVIOUS_KEY_ID), env.IMGBUILDER_LOG_URL_TTL, env.IMGBUILDER_LOG_TOKEN_TTL_AFTER_END) }
        : undefined,
  };
}

function requirePublicUrl(url: string | undefined): string {
  if (!url) throw new ConfigError('invalid configuration:\n  IMGBUILDER_PUBLIC_URL: required with IMGBUILDER_LOG_INFO=supervisor (the origin Gitpod reaches this API\'s supervisor endpoint at)');
  return url;
}
