import { loadEnv, type Env } from './config.js';
import { FetchPolicy, installFetchPolicy } from './fetch-policy.js';
import type { Logger } from './logger.js';
import { redisConnector } from './redis.js';
import { redisKeys, type RedisKeys } from './build-life/index.js';
import { loadCredentialFile, type CredentialTable } from './registry-auth.js';
import { SecretBox } from './secret-box.js';

/** Opens a Redis connection of the given name (REDIS_URL, IMGBUILDER_REDIS_TLS_CA). */
export type RedisConnector = ReturnType<typeof redisConnector>;

/** What the API and the worker each start from: the environment and what the files and keys it names hold. */
export interface ProcessConfig {
  env: Env;
  connectRedis: RedisConnector;
  /** IMGBUILDER_REGISTRY_AUTH_FILE. */
  installation: CredentialTable;
  /** Seals job credentials (and the API's log tokens): IMGBUILDER_SECRET_KEY. */
  secrets: SecretBox;
  keys: RedisKeys;
}

/** Reads the configuration (a ConfigError names what is wrong) and sets what the whole process obeys. */
export function loadProcessConfig(log: Logger): ProcessConfig {
  const env = loadEnv();
  // Every fetch this process makes on a build's behalf obeys it (git, downloads, registries).
  installFetchPolicy(FetchPolicy.fromEnv(env));
  // The configured level; child loggers made from here on inherit it.
  log.level = env.LOG_LEVEL;
  return {
    env,
    connectRedis: redisConnector(env.REDIS_URL, env.IMGBUILDER_REDIS_TLS_CA),
    installation: loadCredentialFile(env.IMGBUILDER_REGISTRY_AUTH_FILE),
    secrets: SecretBox.fromKey(env.IMGBUILDER_SECRET_KEY),
    keys: redisKeys(env.IMGBUILDER_REDIS_NAMESPACE),
  };
}
