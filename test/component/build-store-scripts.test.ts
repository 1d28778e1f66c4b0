import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BuildStore, type CreateBuildInput, QueueSamples, redisKeys } from '@imgbuilder/common/build-life';
import { RedisServer } from '../../testkit/redis-server.js';

// The build state machine's Lua scripts against a real, private redis-server: no engine, no worker.
const keys = redisKeys('imgb');
let server: RedisServer;
const clients: Redis[] = [];
let redis: Redis;
let store: BuildStore;

beforeAll(async () => {
  server = await RedisServer.start();
  redis = client();
  store = new BuildStore(redis, keys);
});

afterAll(async () => {
  for (const c of clients) c.disconnect();
  await server?.stop();
});

function client(): Redis {
  const c = new Redis(server.url, { maxRetriesPerRequest: 1 });
  clients.push(c);
  return c;
}

let refs = 0;
const input = (over: Partial<CreateBuildInput> = {}): CreateBuildInput => ({
  ref: `reg.example.com/ws:${++refs}`,
  baseRef: 'reg.example.com/base:1',
  triggeredBy: 'test',
  lockTtlMs: 600_000,
  retentionMs: 3_600_000,
  deadlineAt: Date.now() + 600_000,
  ...over,
});

describe('create-or-join', () => {
  it('concurrent calls for one ref, from separate connections, yield one build', async () => {
    const inp = input();
    const stores = Array.from({ length: 8 }, () => new BuildStore(client(), keys));
    const results = await Promise.all(stores.flatMap((s) => [s.createOrJoin(inp), s.createOrJoin(inp)]));
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(new Set(results.map((r) => r.id)).size).toBe(1);
    const id = results[0].id;
    expect(await store.activeIdForRef(inp.ref)).toBe(id);
    expect(await redis.zscore(keys.live, id)).not.toBeNull();
    expect(await store.get(id)).toMatchObject({ id, ref: inp.ref, state: 'queued', attempt: 0, deadlineAt: inp.deadlineAt, logPending: false });
  });

  it('sets the dedupe lock and the last-build pointer to expire as asked', async () => {
    const inp = input({ lockTtlMs: 50_000, retentionMs: 70_000 });
    const { id } = await store.createOrJoin(inp);
    const lockTtl = await redis.pttl(keys.activeByRef(inp.ref));
    const lastTtl = await redis.pttl(keys.lastByRef(inp.ref));
    expect(lockTtl).toBeGreaterThan(0);
    expect(lockTtl).toBeLessThanOrEqual(50_000);
    expect(lastTtl).toBeGreaterThan(50_000);
    expect(lastTtl).toBeLessThanOrEqual(70_000);
    // The record itself lives until the build ends: the retention clock starts then.
    expect(await redis.pttl(keys.build(id))).toBe(-1);
  });

  it('starts a new build when the lock names a build whose record is gone', async () => {
    const inp = input();
    const first = await store.createOrJoin(inp);
    await redis.del(keys.build(first.id));
    const second = await store.createOrJoin(inp);
    expect(second.created).toBe(true);
    expect(second.id).not.toBe(first.id);
  });

  it('starts a new build once the previous one ended', async () => {
    const inp = input();
    const first = await store.createOrJoin(inp);
    expect(await store.finish({ buildId: first.id, ref: inp.ref, state: 'done_failure', message: 'boom', retentionMs: 60_000, eventsTtlMs: 60_000 })).toBeGreaterThan(0);
    const second = await store.createOrJoin(inp);
    expect(second).toMatchObject({ created: true });
    expect(second.id).not.toBe(first.id);
  });
});

describe('finish', () => {
  it('ends a build exactly once: a second finish changes nothing and returns 0', async () => {
    const inp = input();
    const { id } = await store.createOrJoin(inp);
    const before = await store.counters();
    const results = await Promise.all([
      new BuildStore(client(), keys).finish({ buildId: id, ref: inp.ref, state: 'done_success', message: 'ok', retentionMs: 60_000, eventsTtlMs: 30_000 }),
      new BuildStore(client(), keys).finish({ buildId: id, ref: inp.ref, state: 'done_failure', message: 'late', retentionMs: 60_000, eventsTtlMs: 30_000 }),
    ]);
    expect(results.filter((t) => t > 0)).toHaveLength(1);
    const rec = await store.get(id);
    const won = results[0] > 0 ? { state: 'done_success', message: 'ok' } : { state: 'done_failure', message: 'late' };
    expect(rec).toMatchObject(won);
    expect(await store.finish({ buildId: id, ref: inp.ref, state: 'done_failure', message: 'again', retentionMs: 60_000, eventsTtlMs: 30_000 })).toBe(0);
    expect(await store.get(id)).toMatchObject(won);
    const terminal = (await store.readEvents(id, '0-0', 100)).filter((e) => e.kind === 'state' && e.state.startsWith('done_'));
    expect(terminal).toHaveLength(1);
    const after = await store.counters();
    expect((after.done_success ?? 0) + (after.done_failure ?? 0) - (before.done_success ?? 0) - (before.done_failure ?? 0)).toBe(1);
  });

  it('is fenced by the attempt token: a stale attempt cannot end the build, the current one can', async () => {
    const inp = input();
    const { id } = await store.createOrJoin(inp);
    const stale = await store.claim(id, Date.now() + 60_000);
    const current = await store.claim(id, Date.now() + 60_000);
    expect(current).toBeGreaterThan(stale);
    expect(await store.finish({ buildId: id, ref: inp.ref, state: 'done_failure', message: 'stale', retentionMs: 60_000, eventsTtlMs: 30_000, logPending: false, token: stale })).toBe(0);
    expect(await store.get(id)).toMatchObject({ state: 'running', attempt: current });
    const ended = await store.finish({ buildId: id, ref: inp.ref, state: 'done_success', message: '', retentionMs: 60_000, eventsTtlMs: 30_000, logPending: false, token: current });
    expect(ended).toBe(current + 1);
    // The end bumps the token: the attempt that ended it cannot write as a running attempt any more.
    expect(await store.claim(id, Date.now())).toBe(0);
    expect(await store.get(id)).toMatchObject({ state: 'done_success', attempt: ended });
  });

  it('releases the lock, leaves the live set and starts the retention clocks', async () => {
    const inp = input();
    const { id } = await store.createOrJoin(inp);
    await store.finish({ buildId: id, ref: inp.ref, state: 'done_success', message: '', retentionMs: 40_000, eventsTtlMs: 20_000, logPending: true });
    expect(await redis.exists(keys.activeByRef(inp.ref))).toBe(0);
    expect(await redis.zscore(keys.live, id)).toBeNull();
    expect(await store.latestIdForRef(inp.ref)).toBe(id);
    const [recordTtl, eventsTtl, lastTtl] = await Promise.all([redis.pttl(keys.build(id)), redis.pttl(keys.events(id)), redis.pttl(keys.lastByRef(inp.ref))]);
    expect(recordTtl).toBeGreaterThan(20_000);
    expect(recordTtl).toBeLessThanOrEqual(40_000);
    expect(eventsTtl).toBeGreaterThan(0);
    expect(eventsTtl).toBeLessThanOrEqual(20_000);
    expect(lastTtl).toBeGreaterThan(20_000);
    expect(lastTtl).toBeLessThanOrEqual(40_000);
    const rec = await store.get(id);
    expect(rec).toMatchObject({ state: 'done_success', logPending: true });
    expect(rec?.finishedAt).toBeGreaterThan(0);
  });

  it('leaves a newer build’s lock alone', async () => {
    const inp = input();
    const old = await store.createOrJoin(inp);
    // The old build's lock expired and a new build of the ref took it.
    await redis.del(keys.activeByRef(inp.ref));
    const fresh = await store.createOrJoin(inp);
    expect(fresh.created).toBe(true);
    await store.finish({ buildId: old.id, ref: inp.ref, state: 'done_failure', message: 'late end', retentionMs: 60_000, eventsTtlMs: 30_000 });
    expect(await store.activeIdForRef(inp.ref)).toBe(fresh.id);
  });

  it('of a build that does not exist does nothing', async () => {
    expect(await store.finish({ buildId: 'no-such-build', ref: 'reg.example.com/ws:none', state: 'done_success', message: '', retentionMs: 60_000, eventsTtlMs: 30_000 })).toBe(0);
    expect(await redis.exists(keys.build('no-such-build'), keys.events('no-such-build'))).toBe(0);
  });
});

describe('indexes and locks', () => {
  it('lists recent builds newest first and forgets those whose records are gone', async () => {
    const a = await store.createOrJoin(input());
    const b = await store.createOrJoin(input());
    // Both queued in the same second (the score is unix seconds): their order is not defined, only membership.
    expect(await store.recentIds()).toEqual(expect.arrayContaining([a.id, b.id]));
    await store.forgetRecent([a.id]);
    const ids = await store.recentIds();
    expect(ids).toContain(b.id);
    expect(ids).not.toContain(a.id);
  });

  it('gives the reaper’s turn to one holder at a time', async () => {
    const turns = await Promise.all(['p1', 'p2', 'p3'].map((p) => new BuildStore(client(), keys).takeReaperTurn(p, 60_000)));
    expect(turns.filter(Boolean)).toHaveLength(1);
    expect(await redis.pttl(keys.reaperLock)).toBeGreaterThan(0);
  });

  it('keeps queue samples of the last hour only', async () => {
    const samples = new QueueSamples(redis, keys);
    const now = Date.now();
    await samples.add({ at: now - 2 * 3_600_000, queued: 9, running: 9 }, 'pod-a');
    await samples.add({ at: now, queued: 3, running: 1 }, 'pod-b');
    expect(await samples.since(0)).toEqual([{ at: now, queued: 3, running: 1 }]);
  });
});
