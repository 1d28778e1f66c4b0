import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { status } from '@grpc/grpc-js';
import { BuildStatus, LogsRequest, LogsResponse, type ImageBuilderClient } from '@imgbuilder/proto';
import { ObjectStore, objectStoreOptions } from '@imgbuilder/common/object-store';
import { loadEnv } from '@imgbuilder/common/config';
import { build, connect, logs } from '../support/client.js';
import { GitServer } from '../../testkit/git-server.js';
import { dockerfile, gitSource } from '../../testkit/requests.js';
import { alive, firstToLog, pickedUp } from '../support/scenarios.js';
import { rawServerStream } from '../support/raw-grpc.js';
import { S3Server } from '../support/s3-server.js';
import { startStack, type Stack } from '../../testkit/stack.js';
import { buildIdOf, lastOf, terminalMessages, textOf, watchBuild, watchLogs } from '../support/streams.js';

// Every build reaches exactly one terminal state, whatever process dies or freezes (issue 12).
// Each describe block has its own stack (and object store where it freezes one): the blocks run at the same time.

let git: GitServer;
beforeAll(async () => {
  git = await GitServer.start();
});
afterAll(() => git?.stop());


async function objectText(stack: Stack, key: string): Promise<string> {
  const objects = new ObjectStore(objectStoreOptions(loadEnv(stack.env)));
  const body = await objects.getStream(key);
  const parts: Buffer[] = [];
  for await (const c of body as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts).toString('utf8');
}

describe.concurrent('the API killed between creating a build and queueing it', () => {
  let stack: Stack;
  let client: ImageBuilderClient;
  beforeAll(async () => {
    stack = await startStack({ apis: 1, workers: 2, env: { IMGBUILDER_REAPER_INTERVAL: '2s', IMGBUILDER_S3_TIMEOUT: '1s' } });
    client = connect(stack.apiAddrs[0]);
  });
  afterAll(async () => {
    client?.close();
    await stack?.stop();
  });

  it('the reaper ends the orphaned build done_failure saying why; a caller that joined it gets that status; Build again builds', async () => {
    const faulty = await stack.startApi({ IMGBUILDER_FAULT_EXIT_BEFORE_ENQUEUE: '1' });
    const faultyClient = connect(stack.apiAddrs[stack.apis.indexOf(faulty)]);
    git.commit('orphan', { Dockerfile: dockerfile('echo orphan-built') });
    const req = { source: gitSource(git.url('orphan')) };
    try {
      await expect(build(faultyClient, req)).rejects.toMatchObject({ code: status.UNAVAILABLE });
    } finally {
      faultyClient.close();
    }
    expect(faulty.lines.some((l) => l.includes('fault point: exiting before queueing'))).toBe(true);

    // The record and its dedupe lock outlived the API: this call joins the build nobody will run.
    const joined = await build(client, req, 60_000);
    expect(terminalMessages(joined)).toHaveLength(1);
    expect(lastOf(joined).status).toBe(BuildStatus.done_failure);
    expect(lastOf(joined).message).toMatch(/job is gone from the build queue/);
    const orphanId = buildIdOf(joined)!;
    await firstToLog(stack.workers, new RegExp(`"build_id":"${orphanId}".*reaper ends build`), 1_000);
    const text = textOf((await watchLogs(client, { buildId: orphanId }).ended).messages);
    expect(text).toContain(lastOf(joined).message);

    const again = await build(client, req);
    expect(buildIdOf(again)).not.toBe(orphanId);
    expect(lastOf(again).status, lastOf(again).message).toBe(BuildStatus.done_success);
  });
});

describe.concurrent('every worker frozen for longer than the job lock', () => {
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
    for (const w of stack?.workers ?? []) if (alive(w)) w.child.kill('SIGCONT');
    await stack?.stop();
  });

  it('a new worker rebuilds; the resumed workers write neither the record, the event stream nor the log object: one terminal status', async () => {
    git.commit('frozen', { Dockerfile: dockerfile('echo frozen-one', 'sleep 6', 'for i in $(seq 1 20); do echo frozen-two-$i; done') });
    const req = { source: gitSource(git.url('frozen')) };
    const bs = watchBuild(a, req);
    await bs.until((m) => Boolean(buildIdOf(m)), 'the build id');
    const buildId = buildIdOf(bs.messages)!;
    const ls = watchLogs(b, { buildId });
    await ls.until((m) => textOf(m).includes('RUN sleep 6'), 'the sleep step');
    const frozen = stack.workers.filter(alive);
    const holder = await firstToLog(frozen, pickedUp(buildId));
    for (const w of frozen) w.child.kill('SIGSTOP');

    const successor = await stack.startWorker();
    await successor.waitForLine(pickedUp(buildId, true), 60_000);
    const [built, logged] = await Promise.all([bs.ended, ls.ended]);
    expect(built.error).toBeUndefined();
    expect(terminalMessages(built.messages)).toHaveLength(1);
    expect(lastOf(built.messages).status, lastOf(built.messages).message).toBe(BuildStatus.done_success);
    // The successor's own lines, not the step's: the frozen attempt's engine build may have finished every step, and
    // a build whose result is cached whole prints no step at all under BuildKit.
    const successorPart = /build restarted: the worker running it stopped[\s\S]*\[imgbuilder\] done: /;
    expect(textOf(logged.messages)).toMatch(successorPart);

    const redis = new Redis(stack.env.REDIS_URL);
    try {
      const key = `{${stack.env.IMGBUILDER_REDIS_NAMESPACE}}:build:${buildId}`;
      const before = await redis.hgetall(key);
      const objectBefore = await objectText(stack, before.logKey);
      expect(objectBefore).toMatch(successorPart);

      for (const w of frozen) w.child.kill('SIGCONT');
      // The resumed attempt finds itself fenced off at its first write and stops.
      await holder.waitForLine(new RegExp(`"build_id":"${buildId}".*build lost by this attempt`), 60_000);

      const after = await redis.hgetall(key);
      expect(after.state).toBe('done_success');
      expect(after.finishedAt).toBe(before.finishedAt);
      expect(after.attempt).toBe(before.attempt);
      const events = await redis.xrange(`${key}:events`, '-', '+');
      const terminal = events.filter(([, f]) => f[0] === 's' && (f[1] === 'done_success' || f[1] === 'done_failure'));
      expect(terminal).toHaveLength(1);
      expect(await objectText(stack, before.logKey)).toBe(objectBefore);
      // Logs after the fact (from the object) is what the live stream showed.
      const replay = textOf((await watchLogs(a, { buildId }).ended).messages);
      expect(replay).toBe(objectBefore);
    } finally {
      redis.disconnect();
    }
  });
});

describe.concurrent('an object store that hangs (SIGSTOP) mid-build', () => {
  let s3: S3Server;
  let stack: Stack;
  let a: ImageBuilderClient;
  let b: ImageBuilderClient;
  beforeAll(async () => {
    s3 = await S3Server.start();
    stack = await startStack({ apis: 2, workers: 2, env: { IMGBUILDER_S3_ENDPOINT: s3.endpoint, IMGBUILDER_S3_TIMEOUT: '1s' } });
    a = connect(stack.apiAddrs[0]);
    b = connect(stack.apiAddrs[1]);
  });
  afterAll(async () => {
    a?.close();
    b?.close();
    await stack?.stop();
    await s3?.stop();
  });

  it('builds still end (log upload pending) and new ones start; once the store answers again the log object is uploaded whole', async () => {
    git.commit('s3-hung', { Dockerfile: dockerfile('echo before-hang', 'sleep 2', 'echo after-hang') });
    const running = watchBuild(a, { source: gitSource(git.url('s3-hung')) });
    await running.until((m) => Boolean(buildIdOf(m)), 'the build id');
    s3.freeze();
    try {
      // A build started while the store hangs: the API's log-object creation is bounded, so it is queued and runs.
      git.commit('s3-hung-new', { Dockerfile: dockerfile('echo started-during-hang') });
      const fresh = await build(b, { source: gitSource(git.url('s3-hung-new')) }, 120_000);
      const { messages, error } = await running.ended;
      expect(error).toBeUndefined();
      for (const msgs of [messages, fresh]) {
        expect(terminalMessages(msgs)).toHaveLength(1);
        expect(lastOf(msgs).status, lastOf(msgs).message).toBe(BuildStatus.done_success);
        expect(lastOf(msgs).message).toContain('upload pending');
      }
      const buildId = buildIdOf(messages)!;
      const fromRedis = await logs(b, { buildId });
      expect(fromRedis).toContain('after-hang');

      s3.thaw();
      const url = lastOf(messages).info!.logInfo!.url;
      let stored = '';
      for (const deadline = Date.now() + 60_000; stored !== fromRedis && Date.now() < deadline; ) {
        const res = await fetch(url).catch(() => undefined);
        stored = res?.ok ? await res.text() : '';
        if (stored !== fromRedis) await new Promise((r) => setTimeout(r, 500));
      }
      expect(stored).toBe(fromRedis);
    } finally {
      s3.thaw();
    }
  });
});

describe.concurrent('a slow Logs reader across the expiry of the event stream', () => {
  let stack: Stack;
  let client: ImageBuilderClient;
  beforeAll(async () => {
    // Classic builder: Docker 20.10's BuildKit gets stuck now and then on a step printing 20 MB at full speed
    // (README, "Build logs at volume").
    stack = await startStack({ apis: 1, workers: 1, env: { IMGBUILDER_LOG_STREAM_TTL: '1s', IMGBUILDER_BUILDER: 'classic' } });
    client = connect(stack.apiAddrs[0]);
  });
  afterAll(async () => {
    client?.close();
    await stack?.stop();
  });

  it('gets the rest of the log from the object and the stream ends', async () => {
    // ~20 MB: far more than flow-control windows and socket buffers hold, so the paused reader is still catching up
    // when the stream goes.
    git.commit('slow-reader', { Dockerfile: dockerfile("seq 1 400000 | sed 's/$/ slow-reader-padding-padding-padding/'", 'echo slow-reader-last-line') });
    const bs = watchBuild(client, { source: gitSource(git.url('slow-reader')) });
    await bs.until((m) => Boolean(buildIdOf(m)), 'the build id');
    const buildId = buildIdOf(bs.messages)!;
    const frames: Buffer[] = [];
    const reader = rawServerStream(stack.apiAddrs[0], '/builder.ImageBuilder/Logs', LogsRequest.encode(LogsRequest.fromPartial({ buildId })).finish(), (d) => frames.push(d));
    reader.pause();
    const { messages } = await bs.ended;
    expect(lastOf(messages).status, lastOf(messages).message).toBe(BuildStatus.done_success);

    const redis = new Redis(stack.env.REDIS_URL);
    try {
      const events = `{${stack.env.IMGBUILDER_REDIS_NAMESPACE}}:build:${buildId}:events`;
      for (const deadline = Date.now() + 30_000; (await redis.exists(events)) === 1; ) {
        if (Date.now() > deadline) throw new Error('the event stream did not expire');
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      redis.disconnect();
    }
    reader.resume();
    const outcome = await reader.trailers;
    reader.close();
    expect(outcome.status).toBe(status.OK);
    const text = grpcFrames(Buffer.concat(frames))
      .map((f) => Buffer.from(LogsResponse.decode(f).content))
      .reduce((a, b) => Buffer.concat([a, b]), Buffer.alloc(0))
      .toString('utf8');
    expect(text).toContain('slow-reader-last-line');
    expect(text).toBe(textOf((await watchLogs(client, { buildId }).ended).messages));
  });
});

/** Splits gRPC length-prefixed frames. */
function grpcFrames(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i + 5 <= buf.length; ) {
    const n = buf.readUInt32BE(i + 1);
    out.push(buf.subarray(i + 5, i + 5 + n));
    i += 5 + n;
  }
  return out;
}

describe.concurrent('a build waiting long in the queue', () => {
  let stack: Stack;
  let client: ImageBuilderClient;
  beforeAll(async () => {
    stack = await startStack({ apis: 1, workers: 1, env: { IMGBUILDER_WORKER_CONCURRENCY: '1', IMGBUILDER_REAPER_INTERVAL: '1s' } });
    client = connect(stack.apiAddrs[0]);
  });
  afterAll(async () => {
    client?.close();
    await stack?.stop();
  });

  it('keeps its dedupe lock: the reaper refreshes it, so a second Build of the ref joins instead of starting a duplicate', async () => {
    const [worker] = stack.workers;
    git.commit('slot-holder', { Dockerfile: dockerfile('sleep 20') });
    const holder = watchBuild(client, { source: gitSource(git.url('slot-holder')) });
    await holder.until((m) => Boolean(buildIdOf(m)), 'the slot holder');
    await worker.waitForLine(pickedUp(buildIdOf(holder.messages)!), 60_000);

    git.commit('long-queued', { Dockerfile: dockerfile('echo queued') });
    const req = { source: gitSource(git.url('long-queued')) };
    const first = watchBuild(client, req);
    await first.until((m) => Boolean(buildIdOf(m)), 'the queued build');
    const lock = `{${stack.env.IMGBUILDER_REDIS_NAMESPACE}}:ref:${first.messages[0].ref}:active`;
    const redis = new Redis(stack.env.REDIS_URL);
    try {
      // As if the build had waited in the queue until its lock was about to lapse.
      await redis.pexpire(lock, 1_500);
      const passes = worker.lines.filter((l) => l.includes('reaper pass')).length;
      await worker.waitForLine(new RegExp(`"pass":${passes + 2},.*reaper pass`), 30_000);
      expect(await redis.pttl(lock)).toBeGreaterThan(60_000);
    } finally {
      redis.disconnect();
    }
    const second = watchBuild(client, req);
    await second.until((m) => Boolean(buildIdOf(m)), 'the second call');
    expect(buildIdOf(second.messages)).toBe(buildIdOf(first.messages));
    for (const s of [holder, first, second]) s.cancel();
  });
});
