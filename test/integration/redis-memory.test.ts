import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { status } from '@grpc/grpc-js';
import { BuildStatus, type ImageBuilderClient } from '@imgbuilder/proto';
import { build, connect, logs } from '../support/client.js';
import { RedisServer } from '../support/redis-server.js';
import { GitServer } from '../support/git-server.js';
import { dockerfile, gitSource } from '../support/requests.js';
import { startStack, type Stack } from '../support/stack.js';
import { buildIdOf, textOf, watchBuild, watchLogs } from '../support/streams.js';

// Redis memory per build is bounded: only a tail of the log lives in Redis, the rest is served from the object (issue 12).

let git: GitServer;
beforeAll(async () => {
  git = await GitServer.start();
});
afterAll(() => git?.stop());

describe('a log larger than the Redis tail', () => {
  const TAIL = 256 * 1024;
  let stack: Stack;
  let client: ImageBuilderClient;
  beforeAll(async () => {
    // Pinned to the classic builder: these tests time their reads against its line-by-line output stream (BuildKit's
    // progress arrives in batches, so "the log so far" is not what they expect mid-build).
    stack = await startStack({ apis: 1, workers: 1, env: { IMGBUILDER_LOG_REDIS_TAIL: String(TAIL), IMGBUILDER_BUILDER: 'classic' } });
    client = connect(stack.apiAddrs[0]);
  });
  afterAll(async () => {
    client?.close();
    await stack?.stop();
  });

  it('Redis holds only about the tail; a reader joining late gets the head from the object, and every reader the same bytes', async () => {
    git.commit('big-log', { Dockerfile: dockerfile("seq 1 100000 | sed 's/$/ big-log-padding-padding/'", 'sleep 3', 'echo big-log-end') });
    const bs = watchBuild(client, { source: gitSource(git.url('big-log')) });
    await bs.until((m) => Boolean(buildIdOf(m)), 'the build id');
    const buildId = buildIdOf(bs.messages)!;
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
    expect(built.messages[built.messages.length - 1].status).toBe(BuildStatus.done_success);
    const full = textOf(a.messages);
    expect(full).toContain('100000 big-log-padding-padding');
    expect(full).toContain('big-log-end');
    expect(full).not.toContain('bytes of this log are missing');
    expect(textOf(b.messages)).toBe(full);
    expect(textOf((await watchLogs(client, { buildId }).ended).messages)).toBe(full);
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
    stack = await startStack({ apis: 1, workers: 1, env: { REDIS_URL: redis.url, IMGBUILDER_REDIS_GIVE_UP: '8s', IMGBUILDER_LOG_REDIS_TAIL: '64MiB', IMGBUILDER_BUILDER: 'classic' } });
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
    git.commit('oom', { Dockerfile: dockerfile("seq 1 400000 | sed 's/$/ oom-padding-padding-padding/'", 'sleep 30', 'echo oom-never-reached') });
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
