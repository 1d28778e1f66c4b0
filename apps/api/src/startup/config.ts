import type { ServerCredentials } from '@grpc/grpc-js';
import { loadEnv, ConfigError, type Env } from '@imgbuilder/common/config';
import { FetchPolicy, installFetchPolicy } from '@imgbuilder/common/fetch-policy';
import type { Logger } from '@imgbuilder/common/logger';
import { redisConnector } from '@imgbuilder/common/redis';
import { redisKeys, type RedisKeys } from '@imgbuilder/common/redis-keys';
import { loadCredentialFile, type CredentialTable } from '@imgbuilder/common/registry-auth';
import { SecretBox } from '@imgbuilder/common/secret-box';
import { AccessTokens } from '@imgbuilder/common/access-tokens';
import { serverCredentials } from '../grpc/server.js';
import { LogTokens } from '../logs/log-token.js';

type RedisConnector = ReturnType<typeof redisConnector>;

/** The API's configuration: the environment and what the files it names hold. */
export interface ApiConfig {
  env: Env;
  /** Opens a Redis connection of the given name (REDIS_URL, IMGBUILDER_REDIS_TLS_CA). */
  connectRedis: RedisConnector;
  keys: RedisKeys;
  /** IMGBUILDER_REGISTRY_AUTH_FILE. */
  installation: CredentialTable;
  /** Seals job credentials and log tokens (IMGBUILDER_SECRET_KEY). */
  secrets: SecretBox;
  /** The gRPC port's TLS. */
  creds: ServerCredentials;
  /** The tokens of IMGBUILDER_TOKENS_FILE, when there is one. */
  tokens: AccessTokens | undefined;
  /** IMGBUILDER_LOG_INFO=supervisor: the origin log_info names and the tokens it hands out. */
  supervisorLogs: { publicUrl: string; tokens: LogTokens } | undefined;
}

/** Reads the configuration and sets up what the process obeys everywhere (fetch policy, log level). */
export function configure(log: Logger): ApiConfig {
  const env = loadEnv();
  // Every fetch this process makes on a build's behalf obeys it (git, downloads, registries).
  installFetchPolicy(FetchPolicy.fromEnv(env));
  // The configured level; child loggers made from here on inherit it.
  log.level = env.LOG_LEVEL;
  const connectRedis = redisConnector(env.REDIS_URL, env.IMGBUILDER_REDIS_TLS_CA);
  const installation = loadCredentialFile(env.IMGBUILDER_REGISTRY_AUTH_FILE);
  const secrets = SecretBox.fromKey(env.IMGBUILDER_SECRET_KEY);
  return {
    env,
    connectRedis,
    installation,
    secrets,
    creds: serverCredentials({ cert: env.IMGBUILDER_TLS_CERT, key: env.IMGBUILDER_TLS_KEY, ca: env.IMGBUILDER_TLS_CA }),
    keys: redisKeys(env.IMGBUILDER_REDIS_NAMESPACE),
    // With a tokens file every rpc but health needs a token of the right role; without one gRPC stays open (mTLS).
    tokens: env.IMGBUILDER_TOKENS_FILE ? AccessTokens.load(env.IMGBUILDER_TOKENS_FILE) : undefined,
    // Opt-in: Gitpod's server streams live build logs from a "supervisor"; this API plays one (supervisor-log-server.ts).
    supervisorLogs:
      env.IMGBUILDER_LOG_INFO === 'supervisor'
        ? { publicUrl: requirePublicUrl(env.IMGBUILDER_PUBLIC_URL), tokens: new LogTokens(secrets, env.IMGBUILDER_LOG_URL_TTL) }
        : undefined,
  };
}

function requirePublicUrl(url: string | undefined): string {
  if (!url) throw new ConfigError('invalid configuration:\n  IMGBUILDER_PUBLIC_URL: required with IMGBUILDER_LOG_INFO=supervisor (the origin Gitpod reaches this API\'s supervisor endpoint at)');
  return url;
}
