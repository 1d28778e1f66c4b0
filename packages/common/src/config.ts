import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { invalidConfiguration } from './config-error.js';
import { apiFields } from './config/api.js';
import { platformFields } from './config/platform.js';
import { sourceFields } from './config/sources.js';
import { tracingFields } from './config/tracing.js';
import { workerFields } from './config/worker.js';

/**
 * Every environment variable imgbuilder reads, with its default. Defaults describe the local stack that
 * `infra/local/up.sh` starts, so `npm run api` / `npm run worker` work on one machine without settings.
 */
export const EnvFields = z.object({ ...platformFields, ...apiFields, ...workerFields, ...sourceFields, ...tracingFields });

/**
 * Where the layer cache refs live: IMGBUILDER_CACHE_REPOSITORY, else `<IMGBUILDER_BASE_REPOSITORY>/cache`. Never the
 * base or workspace repository itself: a cache ref of a final stage is the base image under another tag, and the
 * registry deletes a manifest with every tag naming it.
 */
export function cacheRepositoryOf(env: { IMGBUILDER_CACHE_REPOSITORY?: string; IMGBUILDER_BASE_REPOSITORY: string }): string {
  return env.IMGBUILDER_CACHE_REPOSITORY || `${env.IMGBUILDER_BASE_REPOSITORY}/cache`;
}

/** EnvFields with the rules that span several of them (a process reading a few fields picks from EnvFields). */
export const EnvSchema = EnvFields.superRefine((env, ctx) => {
  const cache = cacheRepositoryOf(env);
  if (cache === env.IMGBUILDER_BASE_REPOSITORY || cache === env.IMGBUILDER_WORKSPACE_REPOSITORY) {
    ctx.addIssue({ code: 'custom', path: [], message: `IMGBUILDER_CACHE_REPOSITORY (${cache}) must not be the base or workspace repository: cache retention deletes manifests there, and with them every tag of the same image` });
  }
  // One key for API and workers; only development may fall back to the fixed key (SecretBox.fromKey).
  if (!env.IMGBUILDER_SECRET_KEY) {
    if (env.NODE_ENV !== 'development') ctx.addIssue({ code: 'custom', path: [], message: 'IMGBUILDER_SECRET_KEY is required (32 random bytes, base64: `openssl rand -base64 32`); set NODE_ENV=development to run without one' });
  } else if (Buffer.from(env.IMGBUILDER_SECRET_KEY, 'base64').length !== 32) {
    ctx.addIssue({ code: 'custom', path: [], message: 'IMGBUILDER_SECRET_KEY must be 32 bytes, base64-encoded (`openssl rand -base64 32`)' });
  }
});

export type Env = z.output<typeof EnvSchema>;

export { invalidConfiguration } from './config-error.js';

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
