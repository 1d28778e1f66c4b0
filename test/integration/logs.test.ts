import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status } from '@grpc/grpc-js';
import { BuildRequest, BuildStatus, GitAuthMethod, LogsRequest, type BuildResponse, type ImageBuilderClient } from '@imgbuilder/proto';
import { createRedis } from '@imgbuilder/common/redis';
import { build, collect, connect, logs } from '../support/client.js';
import { GitServer } from '../../testkit/git-server.js';
import { dockerfile, gitSource } from '../../testkit/requests.js';
import { freePort, ROOT, startStack, type Stack } from '../../testkit/stack.js';
import { rawServerStream } from '../support/raw-grpc.js';

// Each test or describe block below starts its own stack (stackWith): they run at the same time, except the tests
// that share one (it.sequential).
let git: GitServer;
const stacks: Stack[] = [];
const clients: ImageBuilderClient[] = [];

beforeAll(async () => {
  git = await GitServer.start();
});
afterAll(async () => {
  for (const c of clients) c.close();
  git?.stop();
  await Promise.all(stacks.map((s) => s.stop()));
});

async function stackWith(env: Record<string, string> = {}, workers = 1): Promise<{ stack: Stack; client: ImageBuilderClient }> {
  const stack = await startStack({ apis: 1, workers, env });
  stacks.push(stack);
  const client = connect(stack.apiAddrs[0]);
  clients.push(client);
  return { stack, client };
}

/** Starts a Build stream and resolves with the first (running) message; `done` collects the rest. */
function startBuild(client: ImageBuilderClient, req: Parameters<typeof build>[1]) {
  const stream = client.build(BuildRequest.fromPartial(req));
  const done = collect<BuildResponse>(stream);
  const first = new Promise<BuildResponse>((resolve, reject) => {
    stream.once('data', resolve);
    stream.once('error', reject);
  });
  return { first, done };
}

const terminalOf = (msgs: BuildResponse[]) => msgs[msgs.length - 1];

describe.concurrent('build logs in object storage', () => {
  let stack: Stack;
  let client: ImageBuilderClient;
  beforeAll(async () => {
    ({ stack, client } = await stackWith());
  });

  it.sequential('every BuildInfo carries a presigned URL whose object exists from the first running message and ends byte-equal to what Logs streamed', async () => {
    git.commit('counted', { Dockerfile: dockerfile('for i in $(seq 1 40); do echo counted-line-$i; sleep 0.05; done') });
    const { first, done } = startBuild(client, { source: gitSource(git.url('counted')) });
    const running = await first;
    expect(running.status).toBe(BuildStatus.running);
    const url = running.info!.logInfo!.url;
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/.+X-Amz-Signature=/);
    expect(running.info!.logInfo!.headers).toEqual({});
    const early = await fetch(url);
    expect(early.status).toBe(200);
    await early.arrayBuffer();
    // While the build runs the object holds the log so far (rewritten at least every 2 s).
    let partial = '';
    for (const deadline = Date.now() + 30_000; !partial.includes('counted-line-10') && Date.now() < deadline; ) {
      partial = await (await fetch(url)).text();
      if (!partial.includes('counted-line-10')) await new Promise((r) => setTimeout(r, 200));
    }
    expect(partial).toContain('counted-line-10');

    // A subscriber attaching mid-build gets everything from the start, then live lines, no gap, no duplicate.
    const live = await logs(client, { buildId: running.info!.buildId });
    const msgs = await done;
    expect(terminalOf(msgs).status).toBe(BuildStatus.done_success);
    for (const m of msgs) expect(m.info?.logInfo?.url).toBeTruthy();

    const stored = await (await fetch(terminalOf(msgs).info!.logInfo!.url)).text();
    expect(stored).toBe(live);
    // Classic prints a step's output as is; BuildKit (as --progress=plain) after "#<step> <seconds> ".
    const lines = live
      .split('\n')
      .filter((l) => /^(#\d+ \d+\.\d{3} )?counted-line-\d+$/.test(l))
      .map((l) => l.replace(/^#\d+ \d+\.\d{3} /, ''));
    expect(lines).toEqual(Array.from({ length: 40 }, (_, i) => `counted-line-${i + 1}`));
    // Human-readable docker output, not engine JSON, and no aws-chunked framing.
    expect(stored).toMatch(/^Step 1\/|^#\d+ \[1\/\d+\] FROM /m);
    expect(stored).not.toContain('{"stream"');
    expect(stored).not.toMatch(/chunk-signature/);

    // A finished build's log is served again (from the object), by id and by ref, and the stream ends.
    expect(await logs(client, { buildId: running.info!.buildId })).toBe(stored);
    expect(await logs(client, { buildRef: running.ref })).toBe(stored);
  });

  it.sequential('censored=true strips the base and workspace repository names and refs', async () => {
    git.commit('censor', { Dockerfile: dockerfile('echo censor-me') });
    const msgs = await build(client, { source: gitSource(git.url('censor')) });
    const id = msgs[0].info!.buildId;
    const plain = await logs(client, { buildId: id });
    expect(plain).toContain(msgs[0].ref);
    const censored = await logs(client, { buildId: id, censored: true });
    expect(censored).toContain('censor-me');
    for (const s of [msgs[0].ref, msgs[0].baseRef, stack.env.IMGBUILDER_BASE_REPOSITORY, stack.env.IMGBUILDER_WORKSPACE_REPOSITORY]) expect(censored).not.toContain(s);
  });

  it.sequential('Logs for an unknown build is NOT_FOUND "build not found"', async () => {
    await expect(logs(client, { buildId: '00000000-0000-0000-0000-000000000000' })).rejects.toMatchObject({ code: status.NOT_FOUND, details: 'build not found' });
  });
});

describe.concurrent('secrets never reach logs or Redis', () => {
  it('a git password echoed by the build and registry credentials appear in no stream, object, or Redis value', async () => {
    const { stack, client } = await stackWith();
    const password = `pw-${Math.random().toString(36).slice(2)}-secret`;
    const registrySecret = `reg-${Math.random().toString(36).slice(2)}-secret`;
    const additional = Buffer.from(`someone:${registrySecret}`).toString('base64');
    git.commit('secrets', { Dockerfile: dockerfile(`echo leaking ${password} now`, `echo also ${registrySecret}`) });
    const source = gitSource(git.url('secrets'));
    if (source.from?.$case === 'file' && source.from.file.source?.spec?.$case === 'git') {
      source.from.file.source.spec.git.config = { customConfig: {}, authentication: GitAuthMethod.BASIC_AUTH, authUser: 'someone', authPassword: password, authOts: '' };
    }
    const { first, done } = startBuild(client, { source, auth: { mode: undefined, additional: { 'registry.example.com': additional } } });
    const running = await first;
    // While the build is queued/running, its job and records sit in Redis: scan them now and after.
    const redis = createRedis(stack.env.REDIS_URL);
    const scan = async () => {
      const found: string[] = [];
      for (const key of await redis.keys(`{${stack.env.IMGBUILDER_REDIS_NAMESPACE}}*`)) {
        const type = await redis.type(key);
        let text = '';
        if (type === 'string') text = (await redis.get(key)) ?? '';
        else if (type === 'hash') text = JSON.stringify(await redis.hgetall(key));
        else if (type === 'stream') text = JSON.stringify(await redis.xrange(key, '-', '+'));
        else if (type === 'list') text = JSON.stringify(await redis.lrange(key, 0, -1));
        else if (type === 'zset') text = JSON.stringify(await redis.zrange(key, 0, -1));
        else if (type === 'set') text = JSON.stringify(await redis.smembers(key));
        for (const s of [password, registrySecret, additional]) if (text.includes(s)) found.push(key);
      }
      return found;
    };
    const during = await scan();
    const streamed = await logs(client, { buildId: running.info!.buildId });
    const msgs = await done;
    const after = await scan();
    redis.disconnect();
    expect(terminalOf(msgs).status, terminalOf(msgs).message).toBe(BuildStatus.done_success);
    const stored = await (await fetch(terminalOf(msgs).info!.logInfo!.url)).text();
    expect(streamed).toContain('leaking *** now');
    for (const text of [streamed, stored, JSON.stringify(msgs)]) {
      expect(text).not.toContain(password);
      expect(text).not.toContain(registrySecret);
    }
    expect(during).toEqual([]);
    expect(after).toEqual([]);
  });
});

describe.concurrent('bounds', () => {
  it('a build that prints without end is cut at IMGBUILDER_LOG_MAX_BYTES with a clear trailing line, and still finishes', async () => {
    const { client } = await stackWith({ IMGBUILDER_LOG_MAX_BYTES: '8KiB' });
    git.commit('chatty', { Dockerfile: dockerfile('for i in $(seq 1 3000); do echo chatty-line-$i-xxxxxxxxxxxxxxxxxxxxxxxx; done') });
    const msgs = await build(client, { source: gitSource(git.url('chatty')) });
    expect(terminalOf(msgs).status).toBe(BuildStatus.done_success);
    const text = await logs(client, { buildId: msgs[0].info!.buildId });
    expect(Buffer.byteLength(text)).toBeLessThan(8 * 1024 + 512);
    expect(text).toContain('log truncated');
    expect(text).not.toContain('chatty-line-3000');
  });

  it('a Logs client that stops reading is dropped with RESOURCE_EXHAUSTED instead of being buffered for', async () => {
    // Classic builder: Docker 20.10's BuildKit gets stuck now and then on a step printing this much at full speed
    // (README, "Build logs at volume").
    const { stack, client } = await stackWith({ IMGBUILDER_SLOW_CLIENT_TIMEOUT: '2s', IMGBUILDER_BUILDER: 'classic' });
    // ~24 MB of output: far more than HTTP/2 flow-control windows and socket buffers hold.
    git.commit('flood', { Dockerfile: dockerfile("seq 1 400000 | sed 's/$/ flood-padding-padding-padding-padding-padding/'") });
    const { first, done } = startBuild(client, { source: gitSource(git.url('flood')) });
    const running = await first;
    const reader = rawServerStream(stack.apiAddrs[0], '/builder.ImageBuilder/Logs', LogsRequest.encode(LogsRequest.fromPartial({ buildId: running.info!.buildId })).finish());
    reader.pause();
    const msgs = await done;
    expect(terminalOf(msgs).status).toBe(BuildStatus.done_success);
    // The server stops writing when the client's window is full, and gives up on it after the timeout.
    await stack.apis[0].waitForLine(/slow client dropped/, 60_000);
    reader.resume();
    const outcome = await reader.trailers;
    reader.close();
    expect(outcome.status).toBe(status.RESOURCE_EXHAUSTED);
    expect(outcome.message).toContain('read nothing');
    // It got a bounded prefix of the ~21 MB log, not all of it.
    expect(outcome.bytes).toBeLessThan(16 * 1024 * 1024);
  });

  it('a quiet build step still gets running keepalives on the Build stream', async () => {
    const { client } = await stackWith({ IMGBUILDER_STREAM_KEEPALIVE: '300ms' });
    git.commit('quiet', { Dockerfile: dockerfile('sleep 3') });
    const msgs = await build(client, { source: gitSource(git.url('quiet')) });
    expect(terminalOf(msgs).status).toBe(BuildStatus.done_success);
    expect(msgs.filter((m) => m.status === BuildStatus.running).length).toBeGreaterThanOrEqual(3);
  });

  it('presigned URLs expire after IMGBUILDER_LOG_URL_TTL, and every response carries a fresh one', async () => {
    const { client } = await stackWith({ IMGBUILDER_LOG_URL_TTL: '2s' });
    git.commit('ttl', { Dockerfile: dockerfile('echo ttl') });
    const msgs = await build(client, { source: gitSource(git.url('ttl')) });
    const url = terminalOf(msgs).info!.logInfo!.url;
    expect(url).toContain('X-Amz-Expires=2');
    expect((await fetch(url)).status).toBe(200);
    // Bounded wait for the expiry to pass; the URL must then be refused.
    let refused = false;
    for (const deadline = Date.now() + 15_000; !refused && Date.now() < deadline; ) {
      const res = await fetch(url);
      await res.arrayBuffer();
      refused = res.status === 403;
      if (!refused) await new Promise((r) => setTimeout(r, 250));
    }
    expect(refused).toBe(true);
  });
});

describe.concurrent('object store faults', () => {
  let s3: ChildProcess | undefined;
  const startS3 = (port: number, dir: string) =>
    new Promise<ChildProcess>((resolve, reject) => {
      const p = spawn(process.execPath, [join(ROOT, 'infra/local/s3rver.mjs'), '--port', String(port), '--directory', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
      const deadline = setTimeout(() => reject(new Error('s3rver did not start')), 15_000);
      const poll = async () => {
        try {
          await fetch(`http://127.0.0.1:${port}/`);
          clearTimeout(deadline);
          resolve(p);
        } catch {
          setTimeout(poll, 100);
        }
      };
      void poll();
    });
  afterAll(() => {
    s3?.kill('SIGKILL');
  });

  it('a build whose object store goes down still finishes, Logs serves it from Redis, and the log is uploaded when the store returns', async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-s3-'));
    s3 = await startS3(port, dir);
    const { client } = await stackWith({ IMGBUILDER_S3_ENDPOINT: `http://127.0.0.1:${port}` });
    git.commit('s3down', { Dockerfile: dockerfile('echo before-outage', 'sleep 2', 'echo after-outage') });
    const { first, done } = startBuild(client, { source: gitSource(git.url('s3down')) });
    const running = await first;
    s3.kill('SIGKILL');
    await new Promise((r) => s3!.once('exit', r));
    const msgs = await done;
    const last = terminalOf(msgs);
    expect(last.status).toBe(BuildStatus.done_success);
    expect(last.message).toContain('upload pending');
    const fromRedis = await logs(client, { buildId: running.info!.buildId });
    expect(fromRedis).toContain('after-outage');

    s3 = await startS3(port, dir);
    let stored = '';
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; ) {
      const res = await fetch(last.info!.logInfo!.url).catch(() => undefined);
      stored = res?.ok ? await res.text() : '';
      if (stored === fromRedis) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(stored).toBe(fromRedis);
  });
});
