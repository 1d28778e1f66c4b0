import { execFile, execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { credentials, status } from '@grpc/grpc-js';
import { BuildStatus, type BuildResponse, type ImageBuilderClient, type ListBuildsResponse } from '@imgbuilder/proto';
import { build, connect } from '../support/client.js';
import { makePki, type TestPki } from '../support/certs.js';
import { GitServer } from '../../testkit/git-server.js';
import { healthCheck } from '../support/health-check.js';
import { httpGet, metricsUrl } from '../support/http.js';
import { dropNamespace } from '../../testkit/redis-server.js';
import { BASE_IMAGE, dockerfile, gitSource } from '../../testkit/requests.js';
import { freePort, startStack, type Stack } from '../../testkit/stack.js';
import { CLI_BUNDLE } from '../../testkit/cli.js';
import { buildIdOf, watchBuild } from '../support/streams.js';

let stack: Stack;
let git: GitServer;
let client: ImageBuilderClient;

beforeAll(async () => {
  // Finished builds stay in Redis 5 s here, so their expiry is visible without waiting for days.
  [stack, git] = await Promise.all([startStack({ apis: 1, workers: 1, env: { IMGBUILDER_LOG_RETENTION: '5s', IMGBUILDER_ENGINE_LOG_CHECK: 'on' } }), GitServer.start()]);
  client = connect(stack.apiAddrs[0]);
});

afterAll(async () => {
  client?.close();
  git?.stop();
  await stack?.stop();
});

const docker = (...args: string[]) =>
  execFileSync('docker', args, { env: { ...process.env, DOCKER_HOST: stack.env.DOCKER_HOST, DOCKER_BUILDKIT: '0' }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
const lastStatus = (msgs: BuildResponse[]) => msgs[msgs.length - 1];

describe('transport security', () => {
  let pki: TestPki;
  beforeAll(() => {
    pki = makePki();
  });
  afterAll(() => rmSync(pki.dir, { recursive: true, force: true }));

  const tlsClient = (addr: string, withCert: 'none' | 'trusted' | 'stranger'): ImageBuilderClient => {
    const key = withCert === 'trusted' ? pki.read(pki.clientKey) : withCert === 'stranger' ? pki.read(pki.strangerKey) : null;
    const cert = withCert === 'trusted' ? pki.read(pki.clientCert) : withCert === 'stranger' ? pki.read(pki.strangerCert) : null;
    return connect(addr, credentials.createSsl(pki.read(pki.caCert), key, cert));
  };
  const listBuilds = (c: ImageBuilderClient) => new Promise<ListBuildsResponse>((resolve, reject) => c.listBuilds({}, (err, res) => (err ? reject(err) : resolve(res))));

  it('TLS: a client trusting the CA is served; a plaintext client is not', async () => {
    const api = await stack.startApi({ IMGBUILDER_TLS_CERT: pki.serverCert, IMGBUILDER_TLS_KEY: pki.serverKey });
    const addr = stack.apiAddrs[stack.apis.indexOf(api)];
    const good = tlsClient(addr, 'none');
    const plain = connect(addr);
    try {
      await expect(listBuilds(good)).resolves.toMatchObject({ builds: expect.any(Array) });
      await expect(listBuilds(plain)).rejects.toMatchObject({ code: status.UNAVAILABLE });
    } finally {
      good.close();
      plain.close();
      await api.kill();
    }
  });

  it('mutual TLS: a client certificate signed by the CA is required; none or a stranger\'s is refused; builds and the CLI work over it', async () => {
    const api = await stack.startApi({ IMGBUILDER_TLS_CERT: pki.serverCert, IMGBUILDER_TLS_KEY: pki.serverKey, IMGBUILDER_TLS_CA: pki.caCert });
    const addr = stack.apiAddrs[stack.apis.indexOf(api)];
    const trusted = tlsClient(addr, 'trusted');
    const anonymous = tlsClient(addr, 'none');
    const stranger = tlsClient(addr, 'stranger');
    try {
      await expect(listBuilds(anonymous)).rejects.toMatchObject({ code: status.UNAVAILABLE });
      await expect(listBuilds(stranger)).rejects.toMatchObject({ code: status.UNAVAILABLE });
      const msgs = await build(trusted, { source: { from: { $case: 'ref', ref: { ref: BASE_IMAGE } } }, forceRebuild: true });
      expect(lastStatus(msgs).status, lastStatus(msgs).message).toBe(BuildStatus.done_success);

      const cli = (...tls: string[]) =>
        new Promise<number>((resolve) => {
          execFile(process.execPath, [CLI_BUNDLE, '--server', addr, ...tls, 'ls'], { timeout: 60_000 }, (err) =>
            resolve(err ? Number((err as { code?: number }).code ?? 1) : 0),
          );
        });
      expect(await cli('--tls-ca', pki.caCert, '--tls-cert', pki.clientCert, '--tls-key', pki.clientKey)).toBe(0);
      expect(await cli('--tls-ca', pki.caCert)).not.toBe(0);
    } finally {
      for (const c of [trusted, anonymous, stranger]) c.close();
      await api.kill();
    }
  });
});

describe('limits', () => {
  it('a full queue answers RESOURCE_EXHAUSTED to a new build (IMGBUILDER_MAX_QUEUED_BUILDS=1, no workers)', async () => {
    const capped = await startStack({ apis: 1, workers: 0, env: { IMGBUILDER_MAX_QUEUED_BUILDS: '1' } });
    const c = connect(capped.apiAddrs[0]);
    try {
      git.commit('queued-1', { Dockerfile: dockerfile('echo one') });
      git.commit('queued-2', { Dockerfile: dockerfile('echo two') });
      const first = watchBuild(c, { source: gitSource(git.url('queued-1')) });
      await first.until((m) => Boolean(buildIdOf(m)), 'the first build to be queued');
      await expect(build(c, { source: gitSource(git.url('queued-2')) })).rejects.toMatchObject({
        code: status.RESOURCE_EXHAUSTED,
        details: expect.stringContaining('IMGBUILDER_MAX_QUEUED_BUILDS=1'),
      });
      // Joining the queued build costs no queue slot.
      const joined = watchBuild(c, { source: gitSource(git.url('queued-1')) });
      await joined.until((m) => Boolean(buildIdOf(m)), 'the joined build');
      expect(buildIdOf(joined.messages)).toBe(buildIdOf(first.messages));
      first.cancel();
      joined.cancel();
    } finally {
      c.close();
      await capped.stop();
      await dropNamespace(capped.env.REDIS_URL, capped.env.IMGBUILDER_REDIS_NAMESPACE);
    }
  });
});

describe('health and metrics', () => {

  it('grpc.health.v1.Health/Check answers SERVING for the server and builder.ImageBuilder, NOT_FOUND for others', async () => {
    const SERVING = 1;
    expect(await healthCheck(stack.apiAddrs[0], '')).toBe(SERVING);
    expect(await healthCheck(stack.apiAddrs[0], 'builder.ImageBuilder')).toBe(SERVING);
    await expect(healthCheck(stack.apiAddrs[0], 'no.such.Service')).rejects.toMatchObject({ code: status.NOT_FOUND });
  });

  it('API and worker serve /livez, /readyz and /metrics with the imgbuilder_* metrics; finished builds expire from Redis; worker logs are JSON with build_id and ref', async () => {
    git.commit('observed', { Dockerfile: dockerfile('echo observed-build') });
    const req = { source: gitSource(git.url('observed')) };
    const [one, two] = await Promise.all([build(client, req), build(client, req)]);
    expect(lastStatus(one).status, lastStatus(one).message).toBe(BuildStatus.done_success);
    expect(lastStatus(two).status).toBe(BuildStatus.done_success);
    const buildId = buildIdOf(one)!;
    expect(buildIdOf(two)).toBe(buildId);

    const apiUrl = await metricsUrl(stack.apis[0]);
    const workerUrl = await metricsUrl(stack.workers[0]);
    for (const url of [apiUrl, workerUrl]) {
      expect(await httpGet(`${url}/livez`)).toMatchObject({ status: 200 });
      expect(await httpGet(`${url}/readyz`)).toMatchObject({ status: 200 });
    }
    // The worker's start-up probe found that the engine passes a step's output whole (its limits are raised).
    await stack.workers[0].waitForLine(/engine step-log check/);
    expect((await httpGet(`${workerUrl}/readyz`)).body).toBe('ready\nengine_step_logs: full\n');
    const apiMetrics = (await httpGet(`${apiUrl}/metrics`)).body;
    expect(apiMetrics).toMatch(/^imgbuilder_builds_started_total [1-9]/m);
    expect(apiMetrics).toMatch(/^imgbuilder_builds_deduplicated_total [1-9]/m);
    expect(apiMetrics).toMatch(/^imgbuilder_queue_builds\{state="waiting"\} \d+/m);
    expect(apiMetrics).toMatch(/^imgbuilder_queue_builds\{state="active"\} \d+/m);
    expect(apiMetrics).toMatch(/^imgbuilder_queue_builds\{state="delayed"\} \d+/m);
    expect(apiMetrics).toMatch(/^imgbuilder_grpc_calls_total\{method="Build",code="OK"\} [1-9]/m);
    const workerMetrics = (await httpGet(`${workerUrl}/metrics`)).body;
    expect(workerMetrics).toMatch(/^imgbuilder_builds_done_total\{outcome="success"\} [1-9]/m);
    expect(workerMetrics).toMatch(/^imgbuilder_build_duration_seconds_bucket\{le="[^"]+",outcome="success"\} \d+/m);
    expect(workerMetrics).toMatch(/^imgbuilder_build_duration_seconds_count\{outcome="success"\} [1-9]/m);
    expect(workerMetrics).toMatch(/^imgbuilder_log_bytes_total [1-9]/m);
    for (const text of [apiMetrics, workerMetrics]) {
      const names = text.split('\n').filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ')[2]);
      expect(names.filter((n) => !n.startsWith('imgbuilder_'))).toEqual([]);
    }

    // Retention: the record and event stream of the finished build carry a TTL; the queue job is gone.
    const ns = `{${stack.env.IMGBUILDER_REDIS_NAMESPACE}}`;
    const redis = new Redis(stack.env.REDIS_URL);
    try {
      const recordTtl = await redis.pttl(`${ns}:build:${buildId}`);
      expect(recordTtl).toBeGreaterThan(0);
      expect(recordTtl).toBeLessThanOrEqual(5_000);
      expect(await redis.pttl(`${ns}:build:${buildId}:events`)).toBeGreaterThan(0);
      expect(await redis.exists(`${ns}:builds:${buildId}`)).toBe(0);
      expect(await redis.zscore(`${ns}:builds:live`, buildId)).toBeNull();
    } finally {
      redis.disconnect();
    }

    // Every worker line about the build is JSON carrying build_id and ref; no line carries the secret key.
    const worker = stack.workers[0];
    const ref = lastStatus(one).ref;
    const about = worker.lines.filter((l) => l.includes(buildId));
    expect(about.length).toBeGreaterThanOrEqual(2);
    for (const line of about) expect(JSON.parse(line)).toMatchObject({ build_id: buildId, ref });
    expect(worker.lines.some((l) => l.includes(stack.env.IMGBUILDER_SECRET_KEY))).toBe(false);
  });

  it('a worker whose Docker engine is unreachable is live but not ready', async () => {
    const addr = `127.0.0.1:${await freePort()}`;
    const worker = await stack.startWorker({
      DOCKER_HOST: `tcp://127.0.0.1:${await freePort()}`,
      // Its own queue: it must not take this stack's builds.
      IMGBUILDER_REDIS_NAMESPACE: `noengine${randomUUID().slice(0, 8)}`,
      IMGBUILDER_METRICS_ADDR: addr,
    });
    try {
      expect(await httpGet(`http://${addr}/livez`)).toMatchObject({ status: 200 });
      expect(await httpGet(`http://${addr}/readyz`)).toMatchObject({ status: 503 });
    } finally {
      await worker.kill();
    }
  });
});

describe('disk hygiene', () => {
  it('prunes dangling images and temp dirs of finished or abandoned builds; spares running builds and, with IMGBUILDER_PRUNE_IMAGES=own, foreign tagged images', async () => {
    const namespace = `hyg${randomUUID().slice(0, 8)}`;
    const tag = `imgbuilder-hygiene-test:${namespace}`;
    const ctx = mkdtempSync(join(tmpdir(), 'imgbuilder-hygiene-ctx-'));
    const buildTagged = (nonce: string) => {
      writeFileSync(join(ctx, 'Dockerfile'), `FROM ${BASE_IMAGE}\nLABEL nonce=${nonce}\n`);
      return docker('build', '-q', '-t', tag, ctx);
    };
    // Building one tag twice leaves the first image dangling.
    const dangling = buildTagged(`${namespace}-1`);
    const current = buildTagged(`${namespace}-2`);
    expect(dangling).not.toBe(current);

    const dir = (id: string, label: string) => {
      const d = join(tmpdir(), `imgbuilder-${id}-${label}`);
      mkdirSync(join(d, 'context'), { recursive: true });
      return d;
    };
    const [finishedId, runningId] = [randomUUID(), randomUUID()];
    const abandoned = dir(randomUUID(), 'abandoned');
    const old = new Date(Date.now() - 2 * 86_400_000);
    utimesSync(abandoned, old, old);
    const finished = dir(finishedId, 'finished');
    const running = dir(runningId, 'running');
    const redis = new Redis(stack.env.REDIS_URL);
    await redis.hset(`{${namespace}}:build:${finishedId}`, { id: finishedId, state: 'done_success', ref: 'x', logKey: 'x' });
    await redis.hset(`{${namespace}}:build:${runningId}`, { id: runningId, state: 'running', ref: 'x', logKey: 'x' });

    // `own`: this engine is shared with other tests, whose tagged images must survive a 1 s threshold.
    const worker = await stack.startWorker({ IMGBUILDER_REDIS_NAMESPACE: namespace, IMGBUILDER_PRUNE_INTERVAL: '1s', IMGBUILDER_PRUNE_AFTER: '1s', IMGBUILDER_PRUNE_IMAGES: 'own' });
    try {
      const inspect = (id: string) => {
        try {
          docker('image', 'inspect', '--format', '{{.Id}}', id);
          return true;
        } catch {
          return false;
        }
      };
      const deadline = Date.now() + 60_000;
      while ((inspect(dangling) || existsSync(abandoned) || existsSync(finished)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 500));
      expect(inspect(dangling)).toBe(false);
      expect(existsSync(abandoned)).toBe(false);
      expect(existsSync(finished)).toBe(false);
      expect(existsSync(running)).toBe(true);
      expect(inspect(current)).toBe(true);
      await worker.waitForLine(/disk hygiene: pruned/, 1_000);
    } finally {
      await worker.kill();
      redis.disconnect();
      await dropNamespace(stack.env.REDIS_URL, namespace);
      for (const d of [ctx, abandoned, finished, running]) rmSync(d, { recursive: true, force: true });
      try {
        docker('rmi', tag);
      } catch {
        /* already gone */
      }
    }
  });
});
