import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { cacheRepositoryOf, loadEnv } from '@imgbuilder/common/config';
import { ConfigError } from '@imgbuilder/common/errors';
import { parseDuration } from '@imgbuilder/common/duration';

describe('configuration', () => {
  it('defaults describe the local stack', () => {
    const env = loadEnv({ NODE_ENV: 'development' });
    expect(env.IMGBUILDER_BUILDER).toBe('buildkit');
    expect(env.IMGBUILDER_CACHE_REPOSITORY).toBeUndefined();
    expect(env.IMGBUILDER_GRPC_ADDR).toBe('0.0.0.0:8080');
    expect(env.IMGBUILDER_BUILD_TIMEOUT).toBe(60 * 60_000);
    expect(env.IMGBUILDER_LOG_URL_TTL).toBe(3_600_000);
    expect(env.IMGBUILDER_LOG_MAX_BYTES).toBe(64 * 1024 * 1024);
    expect(env.IMGBUILDER_LOG_INFO).toBe('presigned');
  });

  it('durations are plain seconds or carry a unit', () => {
    expect(parseDuration('900')).toBe(900_000);
    expect(parseDuration('15m')).toBe(900_000);
    expect(parseDuration('1h')).toBe(3_600_000);
    expect(parseDuration('7d')).toBe(604_800_000);
    expect(parseDuration('soon')).toBeUndefined();
  });

  it('a bad value stops the start with a message naming the variable', () => {
    expect(() => loadEnv({ IMGBUILDER_BUILD_TIMEOUT: 'soon' })).toThrow(ConfigError);
    expect(() => loadEnv({ IMGBUILDER_BUILD_TIMEOUT: 'soon' })).toThrow(/IMGBUILDER_BUILD_TIMEOUT/);
    expect(() => loadEnv({ IMGBUILDER_WORKER_CONCURRENCY: '0' })).toThrow(/IMGBUILDER_WORKER_CONCURRENCY/);
    expect(() => loadEnv({ IMGBUILDER_GRPC_ADDR: 'nonsense' })).toThrow(/IMGBUILDER_GRPC_ADDR/);
    // Presigned URLs cannot outlive S3's 7-day limit.
    expect(() => loadEnv({ IMGBUILDER_LOG_URL_TTL: '8d' })).toThrow(/IMGBUILDER_LOG_URL_TTL/);
    // Gitpod replaces log_info.url's path: only an origin can be honoured.
    expect(() => loadEnv({ IMGBUILDER_PUBLIC_URL: 'https://gitpod.example.com/imgbuilder' })).toThrow(/IMGBUILDER_PUBLIC_URL/);
    expect(() => loadEnv({ IMGBUILDER_LOG_INFO: 'websocket' })).toThrow(/IMGBUILDER_LOG_INFO/);
    expect(() => loadEnv({ IMGBUILDER_BUILDER: 'kaniko' })).toThrow(/IMGBUILDER_BUILDER/);
    expect(() => loadEnv({ IMGBUILDER_CACHE_REPOSITORY: 'not a repository' })).toThrow(/IMGBUILDER_CACHE_REPOSITORY/);
    // Retention deletes manifests in the cache repository: never the base or workspace images'.
    expect(cacheRepositoryOf(loadEnv({ NODE_ENV: 'development' }))).toBe('127.0.0.1:5000/imgbuilder/base/cache');
    expect(() => loadEnv({ NODE_ENV: 'development', IMGBUILDER_CACHE_REPOSITORY: '127.0.0.1:5000/imgbuilder/workspace' })).toThrow(/IMGBUILDER_CACHE_REPOSITORY .* must not be the base or workspace repository/);
    expect(loadEnv({ NODE_ENV: 'development' }).IMGBUILDER_CACHE_RETENTION).toBe(14 * 86_400_000);
    expect(() => loadEnv({ NODE_ENV: 'development', LOG_LEVEL: 'verbose' })).toThrow(/LOG_LEVEL/);
  });

  it('the secret key is required outside development, and must be 32 bytes of base64', () => {
    expect(() => loadEnv({})).toThrow(ConfigError);
    expect(() => loadEnv({})).toThrow('IMGBUILDER_SECRET_KEY is required (32 random bytes, base64: `openssl rand -base64 32`); set NODE_ENV=development to run without one');
    expect(() => loadEnv({ NODE_ENV: 'production', IMGBUILDER_SECRET_KEY: Buffer.alloc(16).toString('base64') })).toThrow(
      'IMGBUILDER_SECRET_KEY must be 32 bytes, base64-encoded (`openssl rand -base64 32`)',
    );
    const key = Buffer.alloc(32, 1).toString('base64');
    expect(loadEnv({ IMGBUILDER_SECRET_KEY: key }).IMGBUILDER_SECRET_KEY).toBe(key);
    expect(loadEnv({ NODE_ENV: 'development' }).IMGBUILDER_SECRET_KEY).toBeUndefined();
  });
});

// Each case starts a process that exits at once: they run at the same time.
describe.concurrent('starting without required settings', () => {
  const start = (app: 'api' | 'worker', env: Record<string, string>) =>
    new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn(process.execPath, [`apps/${app}/dist/main.js`], {
        cwd: new URL('../..', import.meta.url).pathname,
        env: { PATH: process.env.PATH ?? '', IMGBUILDER_METRICS_ADDR: '', IMGBUILDER_HTTP_ADDR: '', IMGBUILDER_GRPC_ADDR: '127.0.0.1:0', ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.on('exit', (code) => {
        clearTimeout(timer);
        resolve({ code, out });
      });
    });

  it.each(['api', 'worker'] as const)('the %s refuses to start without IMGBUILDER_SECRET_KEY (unless NODE_ENV=development)', async (app) => {
    const res = await start(app, {});
    expect(res.code).toBe(1);
    expect(res.out).toContain('IMGBUILDER_SECRET_KEY');
  });

  it('the API refuses the fixed development key on a listener other machines reach', async () => {
    const res = await start('api', { NODE_ENV: 'development', IMGBUILDER_GRPC_ADDR: '0.0.0.0:0' });
    expect(res.code).toBe(1);
    expect(res.out).toMatch(/IMGBUILDER_GRPC_ADDR=0\.0\.0\.0:0 is reachable from other machines: set IMGBUILDER_SECRET_KEY/);
  });

  it('a bad setting stops the API with a message naming the variable', async () => {
    const res = await start('api', { NODE_ENV: 'development', IMGBUILDER_BUILD_TIMEOUT: 'whenever' });
    expect(res.code).toBe(1);
    expect(res.out).toContain('IMGBUILDER_BUILD_TIMEOUT');
  });

  it('LOG_LEVEL is validated with the other settings and sets what the processes log', async () => {
    // The same refusal, raised once the configuration is read, is logged at fatal and so hidden by `silent`.
    const refuse = { NODE_ENV: 'development', IMGBUILDER_LOG_INFO: 'supervisor', IMGBUILDER_SUPERVISOR_ADDR: '127.0.0.1:0' };
    const [bad, fatal, silent] = await Promise.all([
      start('worker', { NODE_ENV: 'development', LOG_LEVEL: 'verbose' }),
      start('api', { ...refuse, LOG_LEVEL: 'fatal' }),
      start('api', { ...refuse, LOG_LEVEL: 'silent' }),
    ]);
    expect(bad.code).toBe(1);
    expect(bad.out).toMatch(/invalid configuration:.*\\n\s+LOG_LEVEL: /);
    expect(fatal.code).toBe(1);
    expect(fatal.out).toContain('IMGBUILDER_PUBLIC_URL');
    expect(silent.code).toBe(1);
    expect(silent.out).toBe('');
  });

  it('the API refuses IMGBUILDER_LOG_INFO=supervisor without IMGBUILDER_PUBLIC_URL', async () => {
    const res = await start('api', { NODE_ENV: 'development', IMGBUILDER_LOG_INFO: 'supervisor', IMGBUILDER_SUPERVISOR_ADDR: '127.0.0.1:0' });
    expect(res.code).toBe(1);
    expect(res.out).toContain('IMGBUILDER_PUBLIC_URL');
  });
});
