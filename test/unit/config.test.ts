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

  it('a zero duration is refused, except where it means "never reuse" (IMGBUILDER_LS_REMOTE_CACHE)', () => {
    expect(() => loadEnv({ NODE_ENV: 'development', IMGBUILDER_LS_REMOTE_TIMEOUT: '0' })).toThrow(/IMGBUILDER_LS_REMOTE_TIMEOUT/);
    expect(loadEnv({ NODE_ENV: 'development' }).IMGBUILDER_LS_REMOTE_CACHE).toBe(5_000);
    expect(loadEnv({ NODE_ENV: 'development', IMGBUILDER_LS_REMOTE_CACHE: '0' }).IMGBUILDER_LS_REMOTE_CACHE).toBe(0);
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
    // Tracing: OTLP over HTTP only, and a trace link needs a place for the id.
    expect(() => loadEnv({ NODE_ENV: 'development', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' })).toThrow(/OTEL_EXPORTER_OTLP_PROTOCOL: http\/protobuf or http\/json/);
    expect(() => loadEnv({ NODE_ENV: 'development', OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' })).toThrow(/OTEL_EXPORTER_OTLP_ENDPOINT/);
    expect(() => loadEnv({ NODE_ENV: 'development', IMGBUILDER_TRACE_URL: 'https://jaeger.example/search' })).toThrow(/IMGBUILDER_TRACE_URL: a URL with \{traceId\}/);
    expect(loadEnv({ NODE_ENV: 'development', IMGBUILDER_TRACE_URL: 'https://jaeger.example/trace/{traceId}' }).IMGBUILDER_TRACE_URL).toBe('https://jaeger.example/trace/{traceId}');
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
