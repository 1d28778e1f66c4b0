import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { status } from '@grpc/grpc-js';
import { BuildStatus, type ImageBuilderClient } from '@imgbuilder/proto';
import { build, connect } from '../support/client.js';
import { GitServer } from '../../testkit/git-server.js';
import { httpGet, metricsUrl } from '../support/http.js';
import { RedisServer } from '../../testkit/redis-server.js';
import { dockerfile, gitSource } from '../../testkit/requests.js';
import { alive, exitCode, firstToLog, manifestPuts, pickedUp, workerKilledMidBuild } from '../support/scenarios.js';
import { freePort, startStack, type Stack } from '../../testkit/stack.js';
import { buildIdOf, lastOf, terminalMessages, textOf, watchBuild, watchLogs } from '../support/streams.js';

// The stacks run with IMGBUILDER_WORKER_LOCK_TIMEOUT=5s and IMGBUILDER_STALLED_CHECK_INTERVAL=2s (testkit/stack.ts).
const LOCK_MS = 5_000;
const STALLED_CHECK_MS = 2_000;
/** Room for a loaded 2-core machine on top of the configured pick-up bound. */
const SLACK_MS = 15_000;

// Each describe block starts its own stack (own Redis namespace, repositories, Redis server where it kills one): the
// blocks run at the same time, mostly waiting on build steps, lock timeouts and give-up timers. Tests that share a
// stack and change it (kill its processes) stay in order (it.sequential).
let git: GitServer;
beforeAll(async () => {
  git = await GitServer.start();
});
afterAll(() => git?.stop());

const closedPortHost = async () => `127.0.0.1:${await freePort()}`;

describe.concurrent('with two API and two worker processes', () => {
  let stack: Stack;
  let a: ImageBuilderClient;
  let b: ImageBuilderClient;

  beforeAll(async () => {
    stack = await startStack({ apis: 2, workers: 2 });
    a = connect(stack.apiAddrs[0]);
    b = connect(stack.apiAddrs[1]);
  });
  afterAll(async () => {
    a?.close();
    b?.close();
    await stack?.stop();
  });

  it.sequential('a worker killed mid-build loses the build to another worker within lock timeout + stalled interval; clients get the rest and done_success', async () => {
    const { pickupMs } = await workerKilledMidBuild(stack, [a, b], git, 'killed');
    console.info(`worker SIGKILL → pick-up by another worker: ${pickupMs} ms (bound ${LOCK_MS + STALLED_CHECK_MS} ms + slack)`);
    expect(pickupMs).toBeLessThan(LOCK_MS + STALLED_CHECK_MS + SLACK_MS);
    await stack.startWorker();
  });

  it.sequential('SIGTERM: the worker takes no new builds, finishes the running one and exits 0', async () => {
    git.commit('sigterm-running', { Dockerfile: dockerfile('echo term-start', 'sleep 5', 'echo term-end') });
    const running = watchBuild(a, { source: gitSource(git.url('sigterm-running')) });
    await running.until((m) => Boolean(buildIdOf(m)), 'the build id');
    const runningId = buildIdOf(running.messages)!;
    const logs = watchLogs(b, { buildId: runningId });
    await logs.until((m) => textOf(m).includes('RUN sleep 5'), 'the sleep step');
    const worker = await firstToLog(stack.workers.filter(alive), pickedUp(runningId));
    worker.child.kill('SIGTERM');
    await worker.waitForLine(/stopping: no new builds/);

    git.commit('sigterm-new', { Dockerfile: dockerfile('echo queued-after-sigterm') });
    const later = await build(b, { source: gitSource(git.url('sigterm-new')) });
    expect(lastOf(later).status, lastOf(later).message).toBe(BuildStatus.done_success);
    const laterId = buildIdOf(later)!;

    const done = await running.ended;
    expect(done.error).toBeUndefined();
    expect(lastOf(done.messages).status, lastOf(done.messages).message).toBe(BuildStatus.done_success);
    expect(textOf((await logs.ended).messages)).toContain('term-end');
    expect(await exitCode(worker)).toBe(0);
    expect(worker.lines.some((l) => l.includes(runningId) && l.includes('"outcome":"done_success"'))).toBe(true);
    expect(worker.lines.some((l) => l.includes(laterId))).toBe(false);
    await stack.startWorker();
  });

  it.sequential('API killed while clients stream: the build goes on; Build again on another API attaches to the same build_id; Logs there replays and continues', async () => {
    const victimApi = stack.apis[0];
    git.commit('api-killed', { Dockerfile: dockerfile('echo before-api-death', 'sleep 6', 'echo after-api-death') });
    const req = { source: gitSource(git.url('api-killed')) };
    const first = watchBuild(a, req);
    await first.until((m) => Boolean(buildIdOf(m)), 'the build id');
    const buildId = buildIdOf(first.messages)!;
    const firstLogs = watchLogs(a, { buildId });
    await firstLogs.until((m) => textOf(m).includes('RUN sleep 6'), 'the sleep step');

    await victimApi.kill('SIGKILL');
    const [cut, cutLogs] = await Promise.all([first.ended, firstLogs.ended]);
    expect(cut.error).toMatchObject({ code: status.UNAVAILABLE });
    expect(cutLogs.error).toMatchObject({ code: status.UNAVAILABLE });
    expect(terminalMessages(cut.messages)).toHaveLength(0);

    const again = watchBuild(b, req);
    const replay = watchLogs(b, { buildId });
    const [rebuilt, replayed] = await Promise.all([again.ended, replay.ended]);
    expect(rebuilt.error).toBeUndefined();
    expect(buildIdOf(rebuilt.messages)).toBe(buildId);
    expect(terminalMessages(rebuilt.messages)).toHaveLength(1);
    expect(lastOf(rebuilt.messages).status, lastOf(rebuilt.messages).message).toBe(BuildStatus.done_success);
    expect(replayed.error).toBeUndefined();
    const text = textOf(replayed.messages);
    expect(text).toContain('before-api-death');
    expect(text).toContain('after-api-death');
    // The build ran once: no restart, one push.
    expect(text).not.toContain('build restarted');
    expect(manifestPuts(stack, lastOf(rebuilt.messages).ref)).toBe(1);
    await stack.startApi();
  });

  it.sequential('registry unreachable: pushing to it ends done_failure naming the registry; checking it answers UNAVAILABLE naming it; workers stay up', async () => {
    const deadBase = await closedPortHost();
    const pushApi = await stack.startApi({ IMGBUILDER_BASE_REPOSITORY: `${deadBase}/dead/base` });
    const pushClient = connect(stack.apiAddrs[stack.apis.indexOf(pushApi)]);
    const deadWs = await closedPortHost();
    const checkApi = await stack.startApi({ IMGBUILDER_WORKSPACE_REPOSITORY: `${deadWs}/dead/workspace` });
    const checkClient = connect(stack.apiAddrs[stack.apis.indexOf(checkApi)]);
    try {
      git.commit('dead-registry', { Dockerfile: dockerfile('echo push-me') });
      const msgs = await build(pushClient, { source: gitSource(git.url('dead-registry')) });
      expect(terminalMessages(msgs)).toHaveLength(1);
      expect(lastOf(msgs).status).toBe(BuildStatus.done_failure);
      expect(lastOf(msgs).message).toContain(`registry ${deadBase} is unreachable`);
      // Infrastructure, not the user's Dockerfile: Gitpod must not read it as a user error.
      expect(lastOf(msgs).message).not.toMatch(/^build failed:/);

      await expect(build(checkClient, { source: gitSource(git.url('dead-registry')) })).rejects.toMatchObject({
        code: status.UNAVAILABLE,
        details: expect.stringContaining(`registry ${deadWs} is unreachable`),
      });
      for (const w of stack.workers.filter(alive)) expect((await httpGet(`${await metricsUrl(w)}/livez`)).status).toBe(200);
      expect(stack.workers.filter(alive)).toHaveLength(2);
    } finally {
      pushClient.close();
      checkClient.close();
      await Promise.all([pushApi.kill(), checkApi.kill()]);
    }
  });
});

describe.concurrent('a build whose workers keep dying', () => {
  let stack: Stack;
  let client: ImageBuilderClient;
  beforeAll(async () => {
    stack = await startStack({ apis: 1, workers: 2, env: { IMGBUILDER_MAX_BUILD_RESTARTS: '0' } });
    client = connect(stack.apiAddrs[0]);
  });
  afterAll(async () => {
    client?.close();
    await stack?.stop();
  });

  it('ends done_failure saying its worker stopped responding more often than IMGBUILDER_MAX_BUILD_RESTARTS allows', async () => {
    git.commit('keeps-dying', { Dockerfile: dockerfile('echo doomed', 'sleep 20') });
    const b = watchBuild(client, { source: gitSource(git.url('keeps-dying')) });
    await b.until((m) => Boolean(buildIdOf(m)), 'the build id');
    const buildId = buildIdOf(b.messages)!;
    const l = watchLogs(client, { buildId });
    await l.until((m) => textOf(m).includes('RUN sleep 20'), 'the sleep step');
    const victim = await firstToLog(stack.workers, pickedUp(buildId));
    await victim.kill('SIGKILL');

    const [built, logged] = await Promise.all([b.ended, l.ended]);
    expect(built.error).toBeUndefined();
    expect(terminalMessages(built.messages)).toHaveLength(1);
    const last = lastOf(built.messages);
    expect(last.status).toBe(BuildStatus.done_failure);
    expect(last.message).toMatch(/worker stopped responding .*IMGBUILDER_MAX_BUILD_RESTARTS/);
    expect(last.message).not.toMatch(/^build failed:/);
    expect(textOf(logged.messages)).toContain(last.message);
  });
});

describe.concurrent('SIGTERM past the grace period', () => {
  let stack: Stack;
  let client: ImageBuilderClient;
  beforeAll(async () => {
    stack = await startStack({ apis: 1, workers: 1, env: { IMGBUILDER_WORKER_SHUTDOWN_GRACE: '1s' } });
    client = connect(stack.apiAddrs[0]);
  });
  afterAll(async () => {
    client?.close();
    await stack?.stop();
  });

  it('hands the running build back: the worker exits 0 and another worker builds it from scratch', async () => {
    git.commit('handback', { Dockerfile: dockerfile('echo handback-start', 'sleep 8', 'echo handback-end') });
    const b = watchBuild(client, { source: gitSource(git.url('handback')) });
    await b.until((m) => Boolean(buildIdOf(m)), 'the build id');
    const buildId = buildIdOf(b.messages)!;
    const l = watchLogs(client, { buildId });
    await l.until((m) => textOf(m).includes('RUN sleep 8'), 'the sleep step');
    const [leaving] = stack.workers;
    const successor = await stack.startWorker();
    leaving.child.kill('SIGTERM');
    expect(await exitCode(leaving)).toBe(0);
    await leaving.waitForLine(new RegExp(`"build_id":"${buildId}".*handed back`), 1_000);

    await successor.waitForLine(pickedUp(buildId, true), 60_000);
    const [built, logged] = await Promise.all([b.ended, l.ended]);
    expect(built.error).toBeUndefined();
    expect(lastOf(built.messages).status, lastOf(built.messages).message).toBe(BuildStatus.done_success);
    const text = textOf(logged.messages);
    expect(text).toContain('worker is shutting down; the build is handed to another worker');
    expect(text).toContain('build restarted');
    expect(text).toContain('handback-end');
  });
});

describe.concurrent('Redis restarted during builds (persistence on)', () => {
  let redis: RedisServer;
  let stack: Stack;
  let a: ImageBuilderClient;
  let b: ImageBuilderClient;
  beforeAll(async () => {
    redis = await RedisServer.start();
    stack = await startStack({ apis: 2, workers: 2, env: { REDIS_URL: redis.url, IMGBUILDER_REDIS_GIVE_UP: '8s' } });
    a = connect(stack.apiAddrs[0]);
    b = connect(stack.apiAddrs[1]);
  });
  afterAll(async () => {
    a?.close();
    b?.close();
    await stack?.stop();
    await redis?.stop();
  });

  it.sequential('API and workers reconnect by themselves; the running build finishes and clients get its terminal status (or UNAVAILABLE, then attach again)', async () => {
    git.commit('redis-restart', { Dockerfile: dockerfile('echo before-redis-restart', 'sleep 6', 'echo after-redis-restart') });
    const req = { source: gitSource(git.url('redis-restart')) };
    const bs = watchBuild(a, req);
    await bs.until((m) => Boolean(buildIdOf(m)), 'the build id');
    const buildId = buildIdOf(bs.messages)!;
    const ls = watchLogs(b, { buildId });
    await ls.until((m) => textOf(m).includes('RUN sleep 6'), 'the sleep step');

    await redis.restart('SIGKILL');

    const [built, logged] = await Promise.all([bs.ended, ls.ended]);
    console.info(`across the Redis restart: Build stream ${built.error ? `ended ${built.error.message}` : 'got its terminal status'}; Logs stream ${logged.error ? `ended ${logged.error.message}` : 'ended with the build'}`);
    let final = built.messages;
    if (built.error) {
      // A stream that was reading Redis at the wrong moment ends UNAVAILABLE: retrying attaches to the same build.
      expect(built.error).toMatchObject({ code: status.UNAVAILABLE });
      final = await build(b, req);
      if (buildIdOf(final)) expect(buildIdOf(final)).toBe(buildId);
    }
    expect(lastOf(final).status, lastOf(final).message).toBe(BuildStatus.done_success);
    let text = textOf(logged.messages);
    if (logged.error) {
      expect(logged.error).toMatchObject({ code: status.UNAVAILABLE });
      text = textOf((await watchLogs(a, { buildId }).ended).messages);
    }
    expect(text).toContain('before-redis-restart');
    expect(text).toContain('after-redis-restart');

    const check = new Redis(redis.url);
    try {
      expect(await check.hget(`{${stack.env.IMGBUILDER_REDIS_NAMESPACE}}:build:${buildId}`, 'state')).toBe('done_success');
    } finally {
      check.disconnect();
    }
    // The queue works after the restart: a new build runs through both reconnected sides.
    git.commit('after-restart', { Dockerfile: dockerfile('echo fresh-after-restart') });
    const fresh = await build(b, { source: gitSource(git.url('after-restart')) });
    expect(lastOf(fresh).status, lastOf(fresh).message).toBe(BuildStatus.done_success);
    expect(stack.workers.filter(alive)).toHaveLength(2);
  });

  it.sequential('Redis back without its data (no persistence): open streams end UNAVAILABLE instead of waiting for ever; Build again works', async () => {
    git.commit('redis-amnesia', { Dockerfile: dockerfile('echo amnesia-start', 'sleep 6') });
    const req = { source: gitSource(git.url('redis-amnesia')) };
    const bs = watchBuild(a, req);
    await bs.until((m) => Boolean(buildIdOf(m)), 'the build id');
    const ls = watchLogs(b, { buildId: buildIdOf(bs.messages)! });
    await ls.until((m) => textOf(m).includes('RUN sleep 6'), 'the sleep step');

    const flush = new Redis(redis.url);
    await flush.flushall().finally(() => flush.disconnect());
    const [built, logged] = await Promise.all([bs.ended, ls.ended]);
    for (const r of [built, logged]) expect(r.error).toMatchObject({ code: status.UNAVAILABLE, details: expect.stringContaining('call Build again') });
    const again = await build(b, req);
    expect(lastOf(again).status, lastOf(again).message).toBe(BuildStatus.done_success);
    expect(stack.workers.filter(alive)).toHaveLength(2);
  });

  it.sequential('Redis gone for good: open streams end UNAVAILABLE and workers exit non-zero after IMGBUILDER_REDIS_GIVE_UP', async () => {
    git.commit('redis-gone', { Dockerfile: dockerfile('echo redis-gone-start', 'sleep 60') });
    const bs = watchBuild(a, { source: gitSource(git.url('redis-gone')) });
    await bs.until((m) => Boolean(buildIdOf(m)), 'the build id');
    const ls = watchLogs(b, { buildId: buildIdOf(bs.messages)! });
    await ls.until((m) => textOf(m).includes('RUN sleep 60'), 'the sleep step');

    const t0 = Date.now();
    await redis.kill('SIGKILL');
    const codes = await Promise.all(stack.workers.map((w) => exitCode(w, 8_000 + SLACK_MS)));
    expect(codes).toEqual([3, 3]);
    const [built, logged] = await Promise.all([bs.ended, ls.ended]);
    console.info(`Redis gone: workers exited and streams ended within ${Date.now() - t0} ms (give-up 8s)`);
    expect(built.error).toMatchObject({ code: status.UNAVAILABLE, details: expect.stringContaining('unreachable') });
    expect(logged.error).toMatchObject({ code: status.UNAVAILABLE });
    expect(stack.apis.every(alive)).toBe(true);
    const ready = await httpGet(`${await metricsUrl(stack.apis[0])}/readyz`);
    expect(ready.status).toBe(503);
  });
});

describe.concurrent('Docker engine unreachable', () => {
  let stack: Stack;
  let client: ImageBuilderClient;
  beforeAll(async () => {
    stack = await startStack({ apis: 1, workers: 1, env: { DOCKER_HOST: 'unix:///tmp/imgbuilder-no-such-docker.sock' } });
    client = connect(stack.apiAddrs[0]);
  });
  afterAll(async () => {
    client?.close();
    await stack?.stop();
  });

  it('the build ends done_failure naming the Docker engine after bounded retries; the worker stays up and live', async () => {
    git.commit('no-engine', { Dockerfile: dockerfile('echo never-built') });
    const msgs = await build(client, { source: gitSource(git.url('no-engine')) });
    expect(terminalMessages(msgs)).toHaveLength(1);
    const last = lastOf(msgs);
    expect(last.status).toBe(BuildStatus.done_failure);
    expect(last.message).toContain('Docker engine at unix:///tmp/imgbuilder-no-such-docker.sock is unreachable');
    expect(last.message).not.toMatch(/^build failed:/);
    const text = textOf((await watchLogs(client, { buildId: buildIdOf(msgs)! }).ended).messages);
    expect(text).toMatch(/retrying \(1\/2\)/);
    const [worker] = stack.workers;
    expect(alive(worker)).toBe(true);
    const url = await metricsUrl(worker);
    expect((await httpGet(`${url}/livez`)).status).toBe(200);
    expect((await httpGet(`${url}/readyz`)).status).toBe(503);
  });
});

describe.concurrent('build timeout', () => {
  let stack: Stack;
  let client: ImageBuilderClient;
  beforeAll(async () => {
    stack = await startStack({ apis: 1, workers: 1, env: { IMGBUILDER_BUILD_TIMEOUT: '3s' } });
    client = connect(stack.apiAddrs[0]);
  });
  afterAll(async () => {
    client?.close();
    await stack?.stop();
  });

  it('stops the build in the engine and ends done_failure "build timed out after 3s", leaving no container', async () => {
    const marker = `timeout-marker-${Math.random().toString(36).slice(2)}`;
    git.commit('timeout', { Dockerfile: dockerfile(`sleep 30 && echo ${marker}`) });
    const started = Date.now();
    const msgs = await build(client, { source: gitSource(git.url('timeout')) });
    expect(Date.now() - started).toBeLessThan(25_000);
    expect(terminalMessages(msgs)).toHaveLength(1);
    expect(lastOf(msgs)).toMatchObject({ status: BuildStatus.done_failure, message: 'build timed out after 3s' });
    const containers = () =>
      execFileSync('docker', ['ps', '-a', '--no-trunc', '--format', '{{.ID}} {{.Command}}'], { env: { ...process.env, DOCKER_HOST: stack.env.DOCKER_HOST }, encoding: 'utf8' })
        .split('\n')
        .filter((l) => l.includes(marker));
    // BuildKit steps are no containers: their processes show on the engine's host (this machine) by command line.
    const processes = () =>
      readdirSync('/proc')
        .filter((p) => /^\d+$/.test(p))
        .filter((p) => {
          try {
            return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(marker);
          } catch {
            return false;
          }
        });
    // The engine removes the aborted step's container asynchronously: wait for it, bounded.
    const deadline = Date.now() + 20_000;
    while ((containers().length || processes().length) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
    expect(containers()).toEqual([]);
    expect(processes()).toEqual([]);
  });
});
