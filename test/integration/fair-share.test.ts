import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { status, type ServiceError } from '@grpc/grpc-js';
import { BuildStatus, type BuildControlClient, type BuildResponse, type ImageBuilderClient } from '@imgbuilder/proto';
import { connect } from '../support/client.js';
import { cancelBuild, connectControl, eventually } from '../support/control.js';
import { GitServer } from '../../testkit/git-server.js';
import { httpGet, metricsUrl } from '../support/http.js';
import { dockerfile, gitSource } from '../../testkit/requests.js';
import { startStack, type Stack } from '../../testkit/stack.js';
import { buildIdOf, terminalMessages, watchBuild, type WatchedStream } from '../support/streams.js';

// Two stacks of one API and one worker: `open` with no per-caller limits (the order fair share alone gives), and
// `limited` with IMGBUILDER_MAX_RUNNING_PER_CALLER=1 and IMGBUILDER_MAX_QUEUED_PER_CALLER=3.
let open: Stack;
let limited: Stack;
let git: GitServer;
let openClient: ImageBuilderClient;
let limitedClient: ImageBuilderClient;
let limitedControl: BuildControlClient;
let redis: Redis;

beforeAll(async () => {
  [open, limited, git] = await Promise.all([
    startStack({ env: { IMGBUILDER_WORKER_CONCURRENCY: '2' } }),
    startStack({ env: { IMGBUILDER_WORKER_CONCURRENCY: '4', IMGBUILDER_MAX_RUNNING_PER_CALLER: '1', IMGBUILDER_MAX_QUEUED_PER_CALLER: '3' } }),
    GitServer.start(),
  ]);
  openClient = connect(open.apiAddrs[0]);
  limitedClient = connect(limited.apiAddrs[0]);
  limitedControl = connectControl(limited.apiAddrs[0]);
  redis = new Redis(open.env.REDIS_URL, { maxRetriesPerRequest: 2 });
});

afterAll(async () => {
  for (const c of [openClient, limitedClient, limitedControl]) c?.close();
  redis?.disconnect();
  git?.stop();
  await Promise.all([open?.stop(), limited?.stop()]);
});

/** A build of a fresh repo by `caller` whose one step sleeps `seconds`; resolves once its id is known. */
async function submit(client: ImageBuilderClient, caller: string, repo: string, seconds: number): Promise<{ w: WatchedStream<BuildResponse>; id: string }> {
  git.commit(repo, { Dockerfile: dockerfile(`sleep ${seconds}`) });
  const w = watchBuild(client, { source: gitSource(git.url(repo)), triggeredBy: caller }, 240_000);
  await w.until((m) => Boolean(buildIdOf(m)), `${repo}'s build id`);
  return { w, id: buildIdOf(w.messages)! };
}

const states = (stack: Stack, ids: string[]) => Promise.all(ids.map(async (id) => (await redis.hget(`{${stack.env.IMGBUILDER_REDIS_NAMESPACE}}:build:${id}`, 'state')) ?? 'gone'));

describe('fair share across callers', () => {
  it("with every slot busy and one caller's 12 builds queued, another caller's single build finishes before at least 4 of them", async () => {
    // Two slots: alice's first two take them, her other 12 queue.
    const alice = await Promise.all(Array.from({ length: 14 }, (_, i) => submit(openClient, 'alice', `fair-alice-${i}`, 2)));
    await eventually(async () => (await states(open, alice.map((x) => x.id))).filter((s) => s === 'queued').length >= 12, "alice's 12 builds to be queued behind two running", 60_000);
    const finishedAt = new Map<string, number>();
    for (const x of alice) void x.w.ended.then(() => finishedAt.set(x.id, Date.now()));
    const queuedAlice = (await states(open, alice.map((x) => x.id))).flatMap((s, i) => (s === 'queued' ? [alice[i].id] : []));

    const bob = await submit(openClient, 'bob', 'fair-bob', 2);
    const bobEnd = await bob.w.ended;
    const bobAt = Date.now();
    expect(terminalMessages(bobEnd.messages).at(-1)?.status).toBe(BuildStatus.done_success);
    const after = queuedAlice.filter((id) => !finishedAt.has(id) || finishedAt.get(id)! > bobAt).length;
    console.info(`fair share: bob's single build finished before ${after} of alice's ${queuedAlice.length} queued builds (first-in-first-out: 0)`);
    expect(after).toBeGreaterThanOrEqual(4);
    // The rest of alice's builds are not needed: cancel them (what they would do is what the first ones did).
    const control = connectControl(open.apiAddrs[0]);
    try {
      await Promise.all(alice.filter((x) => !finishedAt.has(x.id)).map((x) => cancelBuild(control, { buildId: x.id, requestedBy: 'cleanup' }).catch(() => undefined)));
    } finally {
      control.close();
    }
    const ends = await Promise.all(alice.map((x) => x.w.ended));
    for (const e of ends) expect(terminalMessages(e.messages)).toHaveLength(1);
  });

  it('per-caller limits: one running build per caller, RESOURCE_EXHAUSTED past 3 queued; imgbuilder_queue_demand counts every build wanting a slot', async () => {
    // Four slots, running limit 1: while one slot stays free, the worker keeps deferring alice's and bob's queued
    // builds (BullMQ `delayed` for a second, then `prioritized` again).
    const all: { w: WatchedStream<BuildResponse>; id: string; caller: string }[] = [];
    const add = async (caller: string, i: number) => all.push({ ...(await submit(limitedClient, caller, `limited-${caller}-${i}`, 600)), caller });
    const running = async () => {
      const st = await states(limited, all.map((x) => x.id));
      return all.filter((_, j) => st[j] === 'running').map((x) => x.caller).sort();
    };
    await add('alice', 0);
    await eventually(async () => (await running()).length === 1, "alice's first build to run", 60_000);
    for (let i = 1; i < 4; i++) await add('alice', i);
    git.commit('limited-alice-4', { Dockerfile: dockerfile('sleep 600') });
    const { error } = await watchBuild(limitedClient, { source: gitSource(git.url('limited-alice-4')), triggeredBy: 'alice' }).ended;
    expect((error as ServiceError).code).toBe(status.RESOURCE_EXHAUSTED);
    expect((error as ServiceError).details).toBe('caller "alice" has 3 builds waiting, the limit per caller (IMGBUILDER_MAX_QUEUED_PER_CALLER=3); retry once some have started');
    for (let i = 0; i < 2; i++) await add('bob', i);
    await add('carol', 0);
    await eventually(async () => (await running()).length === 3, 'one build of each caller to run', 60_000);
    await eventually(() => limited.workers[0].lines.some((l) => l.includes('build deferred')), 'a build to be deferred', 30_000);

    // Dedupe stays cluster-wide: dave's Build of alice's source joins her build, which stays in her line.
    const dave = watchBuild(limitedClient, { source: gitSource(git.url('limited-alice-1')), triggeredBy: 'dave' });
    await dave.until((m) => Boolean(buildIdOf(m)), "dave's Build to join");
    expect(buildIdOf(dave.messages)).toBe(all[1].id);
    expect(await redis.hget(`{${limited.env.IMGBUILDER_REDIS_NAMESPACE}}:build:${all[1].id}`, 'triggeredBy')).toBe('alice');

    // Whatever state BullMQ holds each deferred build in at the moment, all 7 are counted, and no caller runs two.
    const url = `${await metricsUrl(limited.apis[0])}/metrics`;
    const demand = async () => Number(/^imgbuilder_queue_demand (\d+)$/m.exec((await httpGet(url)).body)?.[1]);
    for (let i = 0; i < 5; i++) {
      expect(await demand()).toBe(all.length);
      expect(await running()).toEqual(['alice', 'bob', 'carol']);
    }

    await Promise.all(all.map((x) => cancelBuild(limitedControl, { buildId: x.id, requestedBy: 'cleanup' })));
    const ends = await Promise.all([...all.map((x) => x.w.ended), dave.ended]);
    for (const e of ends) expect(terminalMessages(e.messages).at(-1)?.message).toBe('build cancelled by cleanup');
    await eventually(async () => (await demand()) === 0, 'demand to drop to 0', 10_000);
  });
});
