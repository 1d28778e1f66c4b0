import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import { EnvSchema, loadEnv } from '@imgbuilder/common/config';
import { parseByteSize } from '@imgbuilder/common/byte-size';
import { parseDuration } from '@imgbuilder/common/duration';
import { FetchPolicy } from '@imgbuilder/common/fetch-policy';
import { repoPath, type Doc } from '../support/manifests.js';
import { ENGINE_MARKER, SECRET_KEYS } from '../support/k8s.js';

describe('compose stack (infra/compose/compose.yaml)', () => {
  const text = readFileSync(repoPath('infra/compose/compose.yaml'), 'utf8');
  const compose = parseDocument(text, { merge: true }).toJS() as Doc;
  const services = compose.services as Record<string, Doc>;
  /**
   * Compose interpolation as `docker compose config` would do it: required variables (`${X:?…}`) get stand-in values
   * as if set, optional ones (`${X:-default}`) their default.
   */
  const interpolate = (env: Record<string, string>) =>
    Object.fromEntries(
      Object.entries(env).map(([k, v]) => [
        k,
        String(v).replace(/\$\{(\w+)(:?[-?])?([^}]*)\}/g, (_, name: string, op: string | undefined, rest: string) =>
          op?.endsWith('-') ? rest : name === 'IMGBUILDER_SECRET_KEY' ? Buffer.alloc(32, 1).toString('base64') : `${name.toLowerCase()}-value`,
        ),
      ]),
    );
  /** The variable names a value requires from the environment (`${X:?…}`). */
  const required = (v: string) => [...String(v).matchAll(/\$\{(\w+):\?/g)].map((m) => m[1]);

  it('has Redis, MinIO with a bucket job, a registry with its auth job, a Docker engine, 2 APIs and 2 workers', () => {
    expect(Object.keys(services).sort()).toEqual(['api', 'docker', 'minio', 'minio-bucket', 'redis', 'registry', 'registry-auth', 'worker']);
    expect(services.api.deploy.replicas).toBeGreaterThanOrEqual(2);
    expect(services.worker.deploy.replicas).toBeGreaterThanOrEqual(2);
    expect(services.api.command).toEqual(['api']);
    expect(services.worker.command).toEqual(['worker']);
    expect(services.api.build.dockerfile).toBe('Dockerfile');
  });

  it('Redis keeps an append-only file, never evicts and requires the password REDIS_URL carries; the engine is privileged and the workers reach it', () => {
    const redisScript = services.redis.command.join(' ');
    expect(redisScript).toMatch(/--appendonly yes .*--maxmemory-policy noeviction/);
    expect(redisScript).toMatch(/^requirepass \$\$REDISCLI_AUTH$/m);
    expect(required(services.redis.environment.REDISCLI_AUTH)).toEqual(['REDIS_PASSWORD']);
    expect(services.redis.healthcheck.test.join(' ')).toContain('redis-cli ping | grep -q PONG');
    for (const name of ['api', 'worker']) {
      const url = services[name].environment.REDIS_URL as string;
      expect(url).toMatch(/^redis:\/\/:\$\{REDIS_PASSWORD:\?[^}]*\}@redis:6379$/);
    }
    expect(services.docker.privileged).toBe(true);
    expect(services.docker.ports, 'the unauthenticated engine API must not be published').toBeUndefined();
    expect(services.worker.environment.DOCKER_HOST).toBe('tcp://docker:2375');
    expect(services.docker.command).toContain('--insecure-registry=registry:5000');
    expect(services.worker.depends_on.docker.condition).toBe('service_healthy');
  });

  it('the API and worker environments parse with the real config schema and require the secrets from outside', () => {
    for (const name of ['api', 'worker']) {
      const env = services[name].environment as Record<string, string>;
      expect(Object.keys(env).filter((k) => !(k in EnvSchema.shape))).toEqual([]);
      for (const k of SECRET_KEYS) expect(required(env[k]), `${name}: ${k} must come from the environment`).toHaveLength(1);
      expect(Object.values(env).flatMap(required).filter((v) => v.startsWith('MINIO_ROOT')), `${name} must not get MinIO's root`).toEqual([]);
      expect(() => loadEnv(interpolate(env))).not.toThrow();
    }
    expect(parseDuration(services.worker.environment.IMGBUILDER_WORKER_SHUTDOWN_GRACE)! / 1000).toBeLessThan(parseDuration(services.worker.stop_grace_period)! / 1000);
  });

  it('the fetch policy denies the pinned compose network (redis, minio, the engine) and keeps registry:5000 reachable', async () => {
    const env = loadEnv(interpolate(services.worker.environment as Record<string, string>));
    const subnet = (compose.networks as Doc).default.ipam.config[0].subnet as string;
    expect(env.IMGBUILDER_FETCH_DENY).toEqual([subnet]);
    const policy = FetchPolicy.fromEnv(env);
    const onNetwork = async () => [{ address: subnet.replace(/0\/\d+$/, '9') }];
    for (const [host, port] of [['redis', 6379], ['minio', 9000], ['docker', 2375]] as const) {
      await expect(policy.resolve({ host, port, what: 'download url', shown: `http://${host}:${port}/` }, onNetwork), host).rejects.toThrow(/is refused by the fetch policy/);
    }
    await expect(policy.resolve({ host: 'registry', port: 5000, what: 'registry', shown: 'registry:5000' }, onNetwork)).resolves.toBeDefined();
  });

  it('the bucket job applies the same lifecycle file as the Kubernetes install, and gives the services a user of their own', () => {
    const job = services['minio-bucket'];
    expect(job.volumes[0]).toMatch(/^\.\.\/k8s\/base\/bucket-lifecycle\.json:/);
    const script = job.command.join('\n') as string;
    expect(script).toContain('mc ilm rule import');
    expect(script).toContain('mc alias set store http://minio:9000 "$$MINIO_ROOT_USER" "$$MINIO_ROOT_PASSWORD"');
    expect(script).toContain('mc admin user add store "$$AWS_ACCESS_KEY_ID" "$$AWS_SECRET_ACCESS_KEY"');
    expect(script.match(/arn:aws:s3:::[^"]*/g)).toEqual([`arn:aws:s3:::${services.api.environment.IMGBUILDER_S3_BUCKET}`, `arn:aws:s3:::${services.api.environment.IMGBUILDER_S3_BUCKET}/*`]);
    expect(required(services.minio.environment.MINIO_ROOT_USER)).toEqual(['MINIO_ROOT_USER']);
    expect(required(services.minio.environment.MINIO_ROOT_PASSWORD)).toEqual(['MINIO_ROOT_PASSWORD']);
  });

  it('the registry requires the user the registry-auth job writes, and the API and workers read its Docker config', () => {
    const reg = services.registry;
    expect(reg.environment.REGISTRY_AUTH).toBe('htpasswd');
    expect(reg.depends_on['registry-auth'].condition).toBe('service_completed_successfully');
    const htpasswdVolume = (reg.volumes as string[]).find((v) => reg.environment.REGISTRY_AUTH_HTPASSWD_PATH.startsWith(`${v.split(':')[1]}/`))!.split(':')[0];
    const job = services['registry-auth'];
    expect(required(job.environment.REGISTRY_PASSWORD)).toEqual(['REGISTRY_PASSWORD']);
    expect(job.volumes).toContain(`${htpasswdVolume}:/out/htpasswd`);
    const script = job.command.join('\n') as string;
    expect(script).toContain('htpasswd -Bin "$$REGISTRY_USER" > /out/htpasswd/htpasswd');
    expect(script).toContain(`{"auths":{"registry:5000":`);
    const clientVolume = (job.volumes as string[]).find((v) => v.endsWith(':/out/client'))!.split(':')[0];
    for (const name of ['api', 'worker']) {
      const file = services[name].environment.IMGBUILDER_REGISTRY_AUTH_FILE as string;
      expect(file.endsWith('/config.json')).toBe(true);
      expect(services[name].volumes).toContain(`${clientVolume}:${file.slice(0, -'/config.json'.length)}:ro`);
      expect(services[name].depends_on['registry-auth'].condition).toBe('service_completed_successfully');
    }
  });

  it('the engine starts through the Kubernetes sidecar\'s engine-start.sh with the egress policy, and is healthy only once it is installed', () => {
    const engine = services.docker;
    expect(engine.entrypoint).toEqual(['/bin/sh', '/etc/imgbuilder/engine/engine-start.sh']);
    expect(engine.command.slice(0, 2)).toEqual(['dockerd-entrypoint.sh', 'dockerd']);
    expect(engine.volumes).toContain('../engine/engine-start.sh:/etc/imgbuilder/engine/engine-start.sh:ro');
    expect(engine.volumes).toContain('../engine/egress-policy.sh:/etc/imgbuilder/engine/egress-policy.sh:ro');
    expect(engine.healthcheck.test.join(' ')).toContain(`test -f ${ENGINE_MARKER} &&`);
    expect(engine.environment.IMGBUILDER_BUILD_EGRESS_ALLOW).toBe(services.worker.environment.IMGBUILDER_BUILD_EGRESS_ALLOW);
    expect(engine.environment.TINI_SUBREAPER).toBe('1');
    // All builds of all workers together stay under the engine's memory limit.
    const builds = Number(services.worker.environment.IMGBUILDER_WORKER_CONCURRENCY) * services.worker.deploy.replicas;
    expect(parseByteSize(engine.mem_limit.replace(/g$/, 'GiB'))!).toBeGreaterThan(builds * parseByteSize(services.worker.environment.IMGBUILDER_BUILD_MEMORY)!);
  });
});
