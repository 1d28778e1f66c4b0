import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BuildStore, LogStore, redisKeys } from '@imgbuilder/common/build-life';
import { ObjectStore } from '@imgbuilder/common/object-store';
import { BuildReporter, type ReporterOptions } from '../../apps/worker/src/report/build-reporter.js';
import { RedisServer } from '../../testkit/redis-server.js';
import { S3Server } from '../support/s3-server.js';
import { S3PutCounter } from '../../testkit/s3-counter.js';

// The reporter against a private redis-server and a private s3rver: what reaches the event stream and the log object.
const keys = redisKeys('imgb');
let redisServer: RedisServer;
let s3: S3Server;
/** Counts what the reporter PUTs: every upload goes through it. */
let puts: S3PutCounter;
let redis: Redis;
let store: BuildStore;
let objects: ObjectStore;
let logs: LogStore;
const quiet = pino({ level: 'silent' });

beforeAll(async () => {
  [redisServer, s3] = await Promise.all([RedisServer.start(), S3Server.start()]);
  redis = new Redis(redisServer.url, { maxRetriesPerRequest: 1 });
  store = new BuildStore(redis, keys);
  puts = await S3PutCounter.start(s3.endpoint);
  objects = new ObjectStore({
    endpoint: puts.endpoint,
    bucket: 'logs',
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
  });
  logs = new LogStore(redis, keys, objects);
});

afterAll(async () => {
  redis?.disconnect();
  await puts?.stop();
  await Promise.all([redisServer?.stop(), s3?.stop()]);
});

/** A running build and a reporter for its current attempt. */
async function reporter(opts: Partial<ReporterOptions> = {}): Promise<{ r: BuildReporter; id: string }> {
  const ref = `reg.example.com/ws:${Math.random().toString(36).slice(2)}`;
  const { id } = await store.createOrJoin({ ref, baseRef: 'b', triggeredBy: 't', lockTtlMs: 60_000, retentionMs: 60_000, deadlineAt: Date.now() + 60_000 });
  const token = await store.claim(id, Date.now() + 60_000);
  const r = new BuildReporter({ buildId: id, token, maxBytes: 1 << 20, redisTailBytes: 1 << 20, secrets: [], ...opts }, logs, quiet);
  return { r, id };
}

/** Log entries in the stream: text and byte offset. */
async function entries(id: string): Promise<{ text: string; offset?: number }[]> {
  return (await store.readEvents(id, '0-0', 1000)).flatMap((e) => (e.kind === 'log' ? [{ text: e.text, offset: e.offset }] : []));
}

async function object(id: string): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of (await logs.openObject(LogStore.objectKey(id))) as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts).toString('utf8');
}

describe('BuildReporter redaction', () => {
  it('redacts secrets (longest first) and URL credentials before anything reaches Redis or the object', async () => {
    const { r, id } = await reporter({ secrets: ['s3cr3t-token', 's3cr3t', 'ab'] });
    r.write('Step 1: RUN curl -H "Authorization: s3cr3t-token" https://user:pa55@git.example.com/repo.git\n');
    r.write('password s3cr3t again; "ab" is too short to be a secret\n');
    r.addSecrets(['late-password']);
    r.line('registry said: late-password rejected');
    await r.drain();
    const want =
      'Step 1: RUN curl -H "Authorization: ***" https://***@git.example.com/repo.git\n' +
      'password *** again; "ab" is too short to be a secret\n' +
      '[imgbuilder] registry said: *** rejected\n';
    expect((await entries(id)).map((e) => e.text).join('')).toBe(want);
    expect(await r.close()).toBe(true);
    expect(await object(id)).toBe(want);
  });
});

describe('BuildReporter redaction across chunks', () => {
  it('redacts a secret the output splits across chunks, and releases a held-back end that was no secret', async () => {
    const { r, id } = await reporter({ secrets: ['hunter2-password'] });
    r.write('login with hun');
    r.write('ter2-pass');
    r.write('word ok\n');
    r.write('the last word is hunter');
    await r.drain();
    const want = 'login with *** ok\nthe last word is hunter';
    expect((await entries(id)).map((e) => e.text).join('')).toBe(want);
    expect(await r.close()).toBe(true);
    expect(await object(id)).toBe(want);
  });
});

describe('BuildReporter caps', () => {
  it('truncates at maxBytes with one notice, drops what follows, and counts only what was kept', async () => {
    let counted = 0;
    const { r, id } = await reporter({ maxBytes: 100, onBytes: (n) => (counted += n) });
    r.write('x'.repeat(60));
    r.write(`${'y'.repeat(30)}\n${'z'.repeat(30)}`);
    r.write('after the cap\n');
    r.line('also dropped');
    await r.drain();
    const text = (await entries(id)).map((e) => e.text).join('');
    expect(text.startsWith(`${'x'.repeat(60)}${'y'.repeat(30)}\n${'z'.repeat(9)}\n[imgbuilder] log truncated:`)).toBe(true);
    expect(text).toMatch(/more than 100 bytes \(IMGBUILDER_LOG_MAX_BYTES\); the build goes on, its further output is dropped\n$/);
    expect(text).not.toContain('after the cap');
    expect(text).not.toContain('also dropped');
    expect(counted).toBe(Buffer.byteLength(text));
    expect(await r.close()).toBe(true);
    expect(await object(id)).toBe(text);
  });

  it('never cuts a multi-byte character at the cap', async () => {
    const { r, id } = await reporter({ maxBytes: 10 });
    r.write('aaaaaaaaa€€'); // the cap falls inside the first €
    await r.drain();
    const text = (await entries(id)).map((e) => e.text).join('');
    expect(text.startsWith('aaaaaaaaa\n[imgbuilder] log truncated')).toBe(true);
    expect(text).not.toContain('\uFFFD');
    await r.close();
  });

  it('splits the stream into entries of at most 64 Ki characters, never inside a surrogate pair, with byte offsets', async () => {
    const { r, id } = await reporter();
    const head = 'a'.repeat(64 * 1024 - 1);
    const big = `${head}😀${'b'.repeat(70_000)}`;
    r.write(big);
    await r.drain();
    const got = await entries(id);
    expect(got.map((e) => e.text.length)).toEqual([64 * 1024 - 1, 64 * 1024, big.length - (64 * 1024 - 1) - 64 * 1024]);
    expect(got[1].text.startsWith('😀')).toBe(true);
    expect(got.map((e) => e.offset)).toEqual([0, Buffer.byteLength(head), Buffer.byteLength(head) + Buffer.byteLength(got[1].text)]);
    expect(got.map((e) => e.text).join('')).toBe(big);
    await r.close();
  });

  it('keeps only about redisTailBytes of the log in Redis; the whole log stays readable from the object', async () => {
    const { r, id } = await reporter({ redisTailBytes: 100_000 });
    const chunks = ['1', '2', '3', '4'].map((c) => c.repeat(64 * 1024));
    for (const c of chunks) {
      r.write(c);
      await r.drain();
    }
    const kept = await entries(id);
    // An entry goes once it lies wholly more than the tail before the newest end: two of four here.
    expect(kept.map((e) => e.text[0])).toEqual(['3', '4']);
    expect(kept[0].offset).toBe(2 * 64 * 1024);
    expect(await r.close()).toBe(true);
    expect((await logs.readAll(id)).toString()).toBe(chunks.join(''));
  });

  it('a stale attempt writes nothing and says it lost the build', async () => {
    const { r, id } = await reporter();
    let lost: string | undefined;
    const stale = new BuildReporter({ buildId: id, token: 1, maxBytes: 1000, redisTailBytes: 1000, secrets: [], onLost: (why) => (lost = why) }, logs, quiet);
    await store.claim(id, Date.now() + 60_000); // a newer attempt takes over
    stale.write('from the past\n');
    await stale.drain();
    expect(lost).toMatch(/newer attempt/);
    expect((await entries(id)).map((e) => e.text).join('')).not.toContain('from the past');
    expect(await stale.close()).toBe(false);
    await r.close();
  });
});

describe('BuildReporter uploads', () => {
  it('keeps the bytes PUT for a growing log within 3x its final size plus the slack, refreshing the object while it runs', async () => {
    const MiB = 1024 * 1024;
    // A tick every 2 ms instead of 2 s: with the old "rewrite on every tick" this log cost over 100 MiB of PUTs.
    const { r, id } = await reporter({ maxBytes: 64 * MiB, redisTailBytes: MiB, uploadTickMs: 2 });
    const line = (i: number) => `#5 0.${String(i).padStart(3, '0')} line ${String(i).padStart(7, '0')} padding-padding\n`;
    let want = '';
    let refreshed = 0;
    for (let chunk = 0; chunk < 160; chunk++) {
      let text = '';
      for (let i = chunk * 1000; i < (chunk + 1) * 1000; i++) text += line(i);
      r.write(text);
      want += text;
      // The build's pace: the reporter's ticks run between its writes.
      await new Promise((resolve) => setTimeout(resolve, 8));
      refreshed = Math.max(refreshed, puts.putBytes(`/logs/${id}.log`));
    }
    expect(refreshed).toBeGreaterThan(0);
    expect(await r.close()).toBe(true);
    const size = Buffer.byteLength(want);
    expect(size).toBeGreaterThan(6 * MiB);
    expect(await object(id)).toBe(want);
    expect(puts.putBytes(`/logs/${id}.log`)).toBeLessThanOrEqual(3 * size + 4 * MiB);
  });
});
