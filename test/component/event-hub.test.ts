import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BuildEvent, BuildStore, LogStore, redisKeys } from '@imgbuilder/common/build-life';
import { EventHub } from '../../apps/api/src/logs/event-hub.js';
import { RedisServer } from '../../testkit/redis-server.js';

// EventHub against a private redis-server: subscribers join while a writer appends, the way the worker does.
const keys = redisKeys('imgb');
let server: RedisServer;
let redis: Redis;
let sub: Redis;
let store: BuildStore;
let logs: LogStore;
let hub: EventHub;

beforeAll(async () => {
  server = await RedisServer.start();
  redis = new Redis(server.url, { maxRetriesPerRequest: 1 });
  sub = new Redis(server.url, { maxRetriesPerRequest: 1 });
  store = new BuildStore(redis, keys);
  // Appending touches Redis only: the object store is never reached in this test.
  logs = new LogStore(redis, keys, undefined as never);
  hub = new EventHub(store, sub);
});

afterAll(async () => {
  redis?.disconnect();
  sub?.disconnect();
  await server?.stop();
});

async function runningBuild(): Promise<{ id: string; ref: string }> {
  const ref = `reg.example.com/ws:${Math.random().toString(36).slice(2)}`;
  const { id } = await store.createOrJoin({ ref, baseRef: 'b', triggeredBy: 't', lockTtlMs: 60_000, retentionMs: 60_000, deadlineAt: Date.now() + 60_000 });
  await store.claim(id, Date.now() + 60_000);
  return { id, ref };
}

/** Every event of the build's stream, in order. */
async function wholeStream(id: string): Promise<BuildEvent[]> {
  const all: BuildEvent[] = [];
  for (let page = await store.readEvents(id, '0-0', 1000); page.length; page = await store.readEvents(id, page[page.length - 1].id, 1000)) all.push(...page);
  return all;
}

/** Reads the hub until its terminal event; bounded, so a subscriber left waiting fails the test instead of hanging. */
async function collect(id: string, afterId?: string): Promise<BuildEvent[]> {
  const got: BuildEvent[] = [];
  for await (const e of hub.events(id, AbortSignal.timeout(30_000), afterId)) got.push(e);
  return got;
}

describe('EventHub catch-up to live', () => {
  it('subscribers joining while events are published see every event once, in order', async () => {
    const { id, ref } = await runningBuild();
    const N = 1_600; // several catch-up pages (500 each) for late joiners
    const joinAt = new Set([0, 1, 2, 250, 499, 500, 501, 777, 1_000, 1_001, 1_499, 1_599]);
    const readers: Promise<BuildEvent[]>[] = [];
    let offset = 0;
    for (let i = 0; i < N; i++) {
      if (joinAt.has(i)) readers.push(collect(id), collect(id));
      const text = `line ${i}\n`;
      expect(await logs.append(id, text, '', offset)).toBeDefined();
      offset += text.length;
    }
    readers.push(collect(id));
    expect(await store.finish({ buildId: id, ref, state: 'done_success', message: 'fine', retentionMs: 60_000, eventsTtlMs: 60_000 })).toBeGreaterThan(0);
    // A reader after the end, and one resuming from a cursor in the middle, catch up only.
    readers.push(collect(id));
    const all = await wholeStream(id);
    const middle = all[700].id;
    const resumed = await collect(id, middle);

    expect(all.filter((e) => e.kind === 'log')).toHaveLength(N);
    expect(all.at(-1)).toMatchObject({ kind: 'state', state: 'done_success', message: 'fine' });
    const ids = all.map((e) => e.id);
    for (const [n, got] of (await Promise.all(readers)).entries()) expect(got.map((e) => e.id), `reader ${n}`).toEqual(ids);
    expect(resumed.map((e) => e.id)).toEqual(ids.slice(701));
    expect(resumed.filter((e) => e.kind === 'log').map((e) => (e as { text: string }).text)[0]).toBe('line 700\n');
  });

  it('a subscriber joining between appends in quick succession, many times over, misses nothing at the switch', async () => {
    // Joins right before each of the first appends: each lands in a different phase of the reader's switch.
    const { id, ref } = await runningBuild();
    const readers: Promise<BuildEvent[]>[] = [];
    let offset = 0;
    for (let i = 0; i < 60; i++) {
      readers.push(collect(id));
      const text = `l${i}\n`;
      // Not awaited one by one: appends race the readers' first reads and their switch to live.
      void logs.append(id, text, '', offset);
      offset += text.length;
      if (i % 3 === 0) await new Promise((r) => setImmediate(r));
    }
    await store.finish({ buildId: id, ref, state: 'done_failure', message: 'end', retentionMs: 60_000, eventsTtlMs: 60_000 });
    const ids = (await wholeStream(id)).map((e) => e.id);
    expect(ids).toHaveLength(1 + 60 + 1);
    for (const [n, got] of (await Promise.all(readers)).entries()) expect(got.map((e) => e.id), `reader ${n}`).toEqual(ids);
  });
});
