import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { status } from '@grpc/grpc-js';
import { BuildStatus, type ImageBuilderClient } from '@imgbuilder/proto';
import { hashToken, newToken } from '@imgbuilder/common/access-tokens';
import { loadEnv } from '@imgbuilder/common/config';
import { LogStore } from '@imgbuilder/common/build-life';
import { ObjectStore, objectStoreOptions } from '@imgbuilder/common/object-store';
import { build, connect, connectAs, logs } from '../support/client.js';
import { RedisServer } from '../../testkit/redis-server.js';
import { GitServer } from '../../testkit/git-server.js';
import { dockerfile, gitSource } from '../../testkit/requests.js';
import { freePort, startStack, type Stack } from '../../testkit/stack.js';
import { streamImageBuildLog } from '../support/gitpod-log-client.js';
import { buildIdOf, textOf, watchBuild, watchLogs } from '../support/streams.js';

// Redis memory per build is bounded: only a tail of the log lives in Redis, the rest is served from the object (issue 12).

let git: GitServer;
beforeAll(async () => {
  git = await GitServer.start();
});
afterAll(() => git?.stop());

describe('a log larger than the Redis tail', () => {
  const TAIL = 256 * 1024;
  const TOKENS = { viewer: newToken(), builder: newToken() };
  let stack: Stack;
  let client: ImageBuilderClient;
  let dashboard: string;
  beforeAll(async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'imgbuilder-tokens-')), 'tokens.json');
    writeFileSync(file, JSON.stringify({ tokens: [{ name: 'viewer', role: 'viewer', sha256: hashToken(TOKENS.viewer) }, { name: 'builder', role: 'builder', sha256: hashToken(TOKENS.builder) }] }));
    // Every reader of a log on one API: Logs, the dashboard, the supervisor endpoint (log_info). The classic builder:
    // Docker 20.10's BuildKit (this machine's engine) gets stuck now and then on a step printing 20 MB at speed (see
    // README, "Build logs at volume"); what is checked here is the same whichever builder wrote the log.
    stack = await startStack({ apis: 0, workers: 1, env: { IMGBUILDER_LOG_REDIS_TAIL: String(TAIL), IMGBUILDER_TOKENS_FILE: file, IMGBUILDER_LOG_INFO: 'supervisor', IMGBUILDER_BUILDER: 'classic' } });
    const [supervisor, http] = [await freePort(), await freePort()];
    dashboard = `http://127.0.0.1:${http}`;
    await stack.startApi({ IMGBUILDER_SUPERVISOR_ADDR: `127.0.0.1:${supervisor}`, IMGBUILDER_PUBLIC_URL: `http://127.0.0.1:${supervisor}`, IMGBUILDER_HTTP_ADDR: `127.0.0.1:${http}` });
    client = connectAs(stack.apiAddrs[0], `Bearer ${TOKENS.builder}`);
  });
  afterAll(async () => {
    client?.close();
    await stack?.stop();
  });

  it('20 MB: Redis holds only about the tail; Logs (early, late, replay), the object, the dashboard and the supervisor endpoint give the same bytes, a secret censored throughout', async () => {
    // A registry password the build prints on every line: censored wherever chunks, entries or uploads cut it.
    const secret = `reg-${Math.random().toString(36).slice(2)}-secret`;
    const auth = { additional: { 'registry.example.com': Buffer.from(`someone:${secret}`).toString('base64') } };
    const print = `awk 'BEGIN { for (i = 1; i <= 400000; i++) printf "big-log %07d ${secret} padding-padding-padding-padding\\n", i }'`;
    git.commit('big-log', { Dockerfile: dockerfile(print, 'sleep 3', 'echo big-log-end') });
    const bs = watchBuild(client, { source: gitSource(git.url('big-log')), auth });
    await bs.until((m) => Boolean(m.find((x) => x.info?.logInfo?.url)), 'the build id and log_info');
    const info = bs.messages.find((m) => m.info?.logInfo?.url)!.info!;
    const buildId = info.buildId;
    const early = watchLogs(client, { buildId });
    await early.until((m) => textOf(m).includes('RUN sleep 3'), 'the sleep step');

    const redis = new Redis(stack.env.REDIS_URL);
    try {
      const rows = await redis.xrange(`{${stack.env.IMGBUILDER_REDIS_NAMESPACE}}:build:${buildId}:events`, '-', '+');
      const inRedis = rows.reduce((n, [, f]) => n + (f[0] === 'l' ? Buffer.byteLength(f[1]) : 0), 0);
      console.info(`log so far ${Buffer.byteLength(textOf(early.messages))} bytes; in Redis ${inRedis} bytes (tail ${TAIL})`);
      expect(Buffer.byteLength(textOf(early.messages))).toBeGreaterThan(10 * TAIL);
      // The tail plus at most one entry (64 Ki characters) beyond it.
      expect(inRedis).toBeLessThan(TAIL + 4 * 64 * 1024);
    } finally {
      redis.disconnect();
    }

    // Joins while the build runs: its head is no longer in Redis.
    const late = watchLogs(client, { buildId });
    const [built, a, b] = await Promise.all([bs.ended, early.ended, late.ended]);
    expect(built.messages[built.messages.length - 1].status, built.messages[built.messages.length - 1].message).toBe(BuildStatus.done_success);
    const full = textOf(a.messages);
    expect(Buffer.byteLength(full)).toBeGreaterThan(20_000_000);
    expect(full).toMatch(/^big-log 0000001 \*\*\* padding-padding-padding-padding$/m);
    expect(full).toMatch(/^big-log 0400000 \*\*\* padding-padding-padding-padding$/m);
    expect(full.match(/^big-log \d{7} \*\*\* padding-padding-padding-padding$/gm)).toHaveLength(400_000);
    expect(full).toContain('big-log-end');
    expect(full).not.toContain('bytes of this log are missing');
    expect(full).not.toContain(secret);
    expect(textOf(b.messages)).toBe(full);
    expect(textOf((await watchLogs(client, { buildId }).ended).messages)).toBe(full);
    const objects = new ObjectStore(objectStoreOptions(loadEnv(stack.env)));
    expect((await objects.getRange(LogStore.objectKey(buildId), 0, 64 * 1024 * 1024)).bytes.toString('utf8')).toBe(full);
    expect(await dashboardLog(dashboard, buildId, TOKENS.viewer)).toBe(full);
    expect((await streamImageBuildLog(info.logInfo as { url: string; headers: Record<string, string> })).text).toBe(full);
  });
});

describe('job payloads', () => {
  let stack: Stack;
  let client: ImageBuilderClient;
  beforeAll(async () => {
    stack = await startStack({ apis: 1, workers: 0 });
    client = connect(stack.apiAddrs[0]);
  });
  afterAll(async () => {
    client?.close();
    await stack?.stop();
  });

  it('a build request that would put more than 1 MiB in the queue is refused INVALID_ARGUMENT before anything is stored', async () => {
    git.commit('huge-job', { Dockerfile: dockerfile('echo huge') });
    const huge = Buffer.from(`user:${'p'.repeat(2 * 1024 * 1024)}`).toString('base64');
    await expect(build(client, { source: gitSource(git.url('huge-job')), auth: { additional: { 'registry.example.com': huge } } })).rejects.toMatchObject({
      code: status.INVALID_ARGUMENT,
      details: expect.stringContaining('build request is too large'),
    });
    const redis = new Redis(stack.env.REDIS_URL);
    try {
      expect(await redis.zcard(`{${stack.env.IMGBUILDER_REDIS_NAMESPACE}}:builds:live`)).toBe(0);
    } finally {
      redis.disconnect();
    }
  });
});

describe('Redis out of memory under a noisy build', () => {
  let redis: RedisServer;
  let stack: Stack;
  let client: ImageBuilderClient;
  beforeAll(async () => {
    redis = await RedisServer.start();
    // A tail as large as the log stands in for many noisy builds: this one build alone fills Redis.
    stack = await startStack({ apis: 1, workers: 1, env: { REDIS_URL: redis.url, IMGBUILDER_REDIS_GIVE_UP: '8s', IMGBUILDER_LOG_REDIS_TAIL: '64MiB' } });
    client = connect(stack.apiAddrs[0]);
  });
  afterAll(async () => {
    client?.close();
    await stack?.stop();
    await redis?.stop();
  });

  it('the build ends done_failure saying Redis refused its log (no deadlock), its log is whole in the object, and the next build runs', async () => {
    const admin = new Redis(redis.url);
    try {
      const used = Number(/^used_memory:(\d+)/m.exec(await admin.info('memory'))![1]);
      await admin.config('SET', 'maxmemory', String(used + 4 * 1024 * 1024));
    } finally {
      admin.disconnect();
    }
    // In bursts of 150 KB: Docker 20.10's BuildKit gets stuck now and then when over 1 MiB piles up at once.
    const print = `awk 'BEGIN { for (i = 1; i <= 400000; i++) { printf "%d oom-padding-padding-padding\\n", i; if (i % 5000 == 0) { fflush(); system("sleep 0.03") } } }'`;
    git.commit('oom', { Dockerfile: dockerfile(print, 'sleep 30', 'echo oom-never-reached') });
    const msgs = await build(client, { source: gitSource(git.url('oom')) }, 120_000);
    const last = msgs[msgs.length - 1];
    expect(last.status).toBe(BuildStatus.done_failure);
    expect(last.message).toMatch(/Redis refused the build's log .*OOM/);
    const text = await logs(client, { buildId: buildIdOf(msgs)! });
    expect(text).toContain('1 oom-padding-padding-padding');
    expect(text).toContain(last.message);
    expect(text).not.toContain('oom-never-reached');

    git.commit('after-oom', { Dockerfile: dockerfile('echo after-oom') });
    const next = await build(client, { source: gitSource(git.url('after-oom')) }, 120_000);
    expect(next[next.length - 1].status, next[next.length - 1].message).toBe(BuildStatus.done_success);
  });
});

/** A finished build's log as the dashboard streams it (server-sent `log` events, to the `end` event). */
async function dashboardLog(base: string, buildId: string, token: string): Promise<string> {
  const res = await fetch(`${base}/api/builds/${buildId}/log?from=0`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(60_000) });
  let text = '';
  for (const event of (await res.text()).split('\n\n')) {
    const data = /^event: log\ndata: (.*)$/s.exec(event)?.[1];
    if (data) text += (JSON.parse(data) as { t: string }).t;
  }
  return text;
}
