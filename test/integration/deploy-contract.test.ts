import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { healthCheck } from '../support/health-check.js';
import { freePort, localEnv, ROOT, ServiceProcess } from '../../testkit/stack.js';

/**
 * What the Kubernetes manifests and the compose file rely on, checked on processes started exactly as the image
 * starts them (infra/docker/entrypoint.sh): the gRPC health service the kubelet's `grpc:` probe calls, the HTTP
 * probes, and the queue gauge KEDA scales the workers on. The entry point runs the compiled bundles, so this also
 * proves that what `npm run build` produces runs.
 */

const namespace = `deploy${randomBytes(3).toString('hex')}`;
const logDir = mkdtempSync(join(tmpdir(), 'imgbuilder-deploy-contract-'));
const processes: ServiceProcess[] = [];
let env: Record<string, string>;

function startFromImageEntrypoint(target: 'api' | 'worker', extra: Record<string, string>): ServiceProcess {
  const child = spawn(join(ROOT, 'infra/docker/entrypoint.sh'), [target], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env, ...extra },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const p = new ServiceProcess(target, child, join(logDir, `${target}.log`));
  processes.push(p);
  return p;
}

const get = (url: string) => fetch(url, { signal: AbortSignal.timeout(10_000) });


const gauge = (metrics: string, name: string) => {
  const line = metrics.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
};

beforeAll(() => {
  env = {
    ...localEnv(),
    NODE_ENV: 'production',
    IMGBUILDER_SECRET_KEY: randomBytes(32).toString('base64'),
    IMGBUILDER_REDIS_NAMESPACE: namespace,
  };
});

afterAll(async () => {
  await Promise.all(processes.map((p) => p.kill('SIGKILL')));
  // The test's own queue keys only (its namespace is unique).
  const redis = new Redis(env.REDIS_URL);
  const keys = await redis.keys(`{${namespace}}:*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
});

describe('API started by the image entry point', () => {
  let grpcAddr: string;
  let metrics: string;
  let dashboard: string;

  beforeAll(async () => {
    const [grpcPort, metricsPort, httpPort] = [await freePort(), await freePort(), await freePort()];
    grpcAddr = `127.0.0.1:${grpcPort}`;
    metrics = `http://127.0.0.1:${metricsPort}`;
    dashboard = `http://127.0.0.1:${httpPort}`;
    const api = startFromImageEntrypoint('api', {
      IMGBUILDER_GRPC_ADDR: grpcAddr,
      IMGBUILDER_METRICS_ADDR: `127.0.0.1:${metricsPort}`,
      IMGBUILDER_HTTP_ADDR: `127.0.0.1:${httpPort}`,
      IMGBUILDER_DASHBOARD_TOKEN: randomBytes(16).toString('hex'),
    });
    await api.waitForLine(/API listening/, 60_000);
  });

  it('serves the dashboard pages, read from apps/api/dashboard beside the compiled bundle', async () => {
    const res = await get(`${dashboard}/login`);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('<form');
  });

  it('answers the gRPC health check SERVING (the readiness and startup probes) and /livez, /readyz', async () => {
    expect(await healthCheck(grpcAddr)).toBe(1);
    expect((await get(`${metrics}/livez`)).status).toBe(200);
    expect((await get(`${metrics}/readyz`)).status).toBe(200);
  });

  it('exports imgbuilder_queue_demand = waiting + prioritized + delayed + active builds, which KEDA scales workers on', async () => {
    const before = await (await get(`${metrics}/metrics`)).text();
    expect(gauge(before, 'imgbuilder_queue_demand')).toBe(0);
    // Jobs in this test's own namespace, where no worker listens: they stay where they are put.
    // The queue name and prefix are those of packages/common/src/build-life/redis-keys.ts for this namespace.
    const queue = new Queue('builds', { connection: new Redis(env.REDIS_URL, { maxRetriesPerRequest: null }), prefix: `{${namespace}}` });
    try {
      await queue.add('waiting', {}, { jobId: 'deploy-contract-waiting' });
      // BullMQ keeps prioritized jobs outside the `wait` list: a scaler reading that list alone would miss it.
      await queue.add('prioritized', {}, { jobId: 'deploy-contract-prioritized', priority: 5 });
      // Delayed jobs are builds deferred by fair share (their caller at its running limit) or handed back at
      // shutdown: they want a slot too.
      await queue.add('delayed', {}, { jobId: 'deploy-contract-delayed', delay: 3_600_000 });
      const after = await (await get(`${metrics}/metrics`)).text();
      expect(gauge(after, 'imgbuilder_queue_demand')).toBe(3);
    } finally {
      await queue.obliterate({ force: true });
      await queue.close();
    }
  });
});

describe('worker started by the image entry point', () => {
  it('is ready once Redis and its Docker engine answer, and exits 0 on SIGTERM with no build running', async () => {
    const metricsPort = await freePort();
    const worker = startFromImageEntrypoint('worker', { IMGBUILDER_METRICS_ADDR: `127.0.0.1:${metricsPort}` });
    await worker.waitForLine(/worker started/, 60_000);
    expect((await get(`http://127.0.0.1:${metricsPort}/livez`)).status).toBe(200);
    expect((await get(`http://127.0.0.1:${metricsPort}/readyz`)).status).toBe(200);
    // The entry point execs the service, so the signal Kubernetes sends reaches it directly.
    expect(await worker.kill('SIGTERM')).toBe(0);
  });
});
