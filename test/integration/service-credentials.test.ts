import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { connect as connectTcp } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { BuildStatus, GitAuthMethod, type ImageBuilderClient } from '@imgbuilder/proto';
import { build, connect } from '../support/client.js';
import { makePki, type TestPki } from '../support/certs.js';
import { GitServer } from '../../testkit/git-server.js';
import { dockerfile, gitSource } from '../../testkit/requests.js';
import { freePort, localEnv, startStack, type Stack } from '../../testkit/stack.js';
import { buildIdOf, watchBuild } from '../support/streams.js';

// Each describe block is self-contained (its own stack, or its own Redis server): they run at the same time.
describe.concurrent('sealed credentials are bound to their build', () => {
  let stack: Stack;
  let git: GitServer;
  let client: ImageBuilderClient;
  let redis: Redis;
  beforeAll(async () => {
    // No worker yet: the jobs wait in the queue while the test tampers with them.
    [stack, git] = await Promise.all([startStack({ apis: 1, workers: 0 }), GitServer.start()]);
    client = connect(stack.apiAddrs[0]);
    redis = new Redis(stack.env.REDIS_URL, { maxRetriesPerRequest: 2 });
  });
  afterAll(async () => {
    client?.close();
    redis?.disconnect();
    git?.stop();
    await stack?.stop();
  });

  it("a sealed blob copied into another job is refused: that build fails without using it, the blob's own build succeeds", async () => {
    git.commit('sealed-a', { Dockerfile: dockerfile('echo sealed-a') });
    git.commit('sealed-b', { Dockerfile: dockerfile('echo sealed-b') });
    const withAuth = (url: string) => {
      const src = gitSource(url);
      if (src.from?.$case === 'file' && src.from.file.source?.spec?.$case === 'git') {
        src.from.file.source.spec.git.config = { customConfig: {}, authentication: GitAuthMethod.BASIC_AUTH, authUser: 'someone', authPassword: 'sealed-password-a', authOts: '' };
      }
      return src;
    };
    const a = watchBuild(client, { source: withAuth(git.url('sealed-a')) });
    const b = watchBuild(client, { source: gitSource(git.url('sealed-b')) });
    await Promise.all([a.until((m) => !!buildIdOf(m), 'build a queued'), b.until((m) => !!buildIdOf(m), 'build b queued')]);
    const [idA, idB] = [buildIdOf(a.messages)!, buildIdOf(b.messages)!];

    const ns = stack.env.IMGBUILDER_REDIS_NAMESPACE;
    const jobKey = (id: string) => `{${ns}}:builds:${id}`;
    const dataA = JSON.parse((await redis.hget(jobKey(idA), 'data'))!);
    const dataB = JSON.parse((await redis.hget(jobKey(idB), 'data'))!);
    expect(dataA.sealed).toBeTruthy();
    expect(JSON.stringify(dataA)).not.toContain('sealed-password-a');
    // An attacker with write access to Redis moves A's credentials into B's job.
    await redis.hset(jobKey(idB), 'data', JSON.stringify({ ...dataB, sealed: dataA.sealed }));

    await stack.startWorker();
    const [endA, endB] = await Promise.all([a.ended, b.ended]);
    expect(endA.messages.at(-1)?.status).toBe(BuildStatus.done_success);
    expect(endB.messages.at(-1)?.status).toBe(BuildStatus.done_failure);
    expect(endB.messages.at(-1)?.message).toContain('sealed credentials do not belong to this build');
    expect(endB.messages.some((m) => m.message.includes('sealed-b'))).toBe(false);
  });
});

describe.concurrent('Redis of the local stack', () => {
  it('refuses unauthenticated clients; the URL in the stack environment carries the credentials', async () => {
    const url = localEnv().REDIS_URL;
    const { hostname, port, password } = new URL(url);
    expect(password).not.toBe('');
    // A bare client, as a build step or another local user would try: a command without AUTH is refused.
    const reply = await new Promise<string>((resolve, reject) => {
      const sock = connectTcp(Number(port), hostname, () => sock.write('GET any-key\r\n'));
      sock.setTimeout(5_000, () => sock.destroy(new Error('no reply from redis within 5 s')));
      sock.once('data', (d) => {
        resolve(d.toString('utf8'));
        sock.destroy();
      });
      sock.once('error', reject);
    });
    expect(reply).toMatch(/^-NOAUTH/);
    const authed = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    try {
      expect(await authed.ping()).toBe('PONG');
    } finally {
      authed.disconnect();
    }
  });
});

describe.concurrent('Redis over TLS', () => {
  let pki: TestPki;
  let server: ChildProcess;
  let stack: Stack;
  let git: GitServer;
  let url: string;
  beforeAll(async () => {
    pki = makePki();
    const port = await freePort();
    const password = randomBytes(12).toString('hex');
    url = `rediss://:${password}@127.0.0.1:${port}`;
    // A private redis-server speaking only TLS, with a password: the shape of a managed Redis.
    server = spawn('redis-server', ['--port', '0', '--tls-port', String(port), '--bind', '127.0.0.1', '--tls-cert-file', pki.serverCert, '--tls-key-file', pki.serverKey, '--tls-ca-cert-file', pki.caCert, '--tls-auth-clients', 'no', '--requirepass', password, '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    const deadline = Date.now() + 20_000;
    for (;;) {
      const c = new Redis(url, { tls: { ca: pki.read(pki.caCert) }, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      c.on('error', () => undefined);
      const ok = await c.connect().then(() => c.ping(), () => '');
      c.disconnect();
      if (ok === 'PONG') break;
      if (Date.now() > deadline) throw new Error('TLS redis-server did not start');
      await new Promise((r) => setTimeout(r, 100));
    }
    [stack, git] = await Promise.all([startStack({ apis: 1, workers: 1, env: { REDIS_URL: url, IMGBUILDER_REDIS_TLS_CA: pki.caCert } }), GitServer.start()]);
  });
  afterAll(async () => {
    git?.stop();
    await stack?.stop();
    server?.kill('SIGKILL');
    if (pki) rmSync(pki.dir, { recursive: true, force: true });
  });

  it('API and worker work through rediss:// with a password and a private CA', async () => {
    git.commit('over-tls', { Dockerfile: dockerfile('echo over-tls') });
    const client = connect(stack.apiAddrs[0]);
    try {
      const msgs = await build(client, { source: gitSource(git.url('over-tls')) });
      expect(msgs.at(-1)?.status).toBe(BuildStatus.done_success);
      // Every connection of both processes is up over TLS, not just the ones the build needed.
      const names = ['imgbuilder-api', 'imgbuilder-api-sub', 'imgbuilder-api-queue', 'imgbuilder-worker', 'imgbuilder-worker-queue'];
      const probe = new Redis(url, { tls: { ca: pki.read(pki.caCert) }, maxRetriesPerRequest: 1 });
      try {
        const connected = async () => String(await probe.client('LIST')).split('\n').map((l) => /(?:^| )name=(\S*)/.exec(l)?.[1] ?? '');
        const deadline = Date.now() + 15_000;
        let seen = await connected();
        while (!names.every((n) => seen.includes(n)) && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 200));
          seen = await connected();
        }
        console.info(`connections over TLS: ${seen.filter(Boolean).sort().join(', ')}`);
        expect(names.filter((n) => !seen.includes(n))).toEqual([]);
      } finally {
        probe.disconnect();
      }
    } finally {
      client.close();
    }
  });
});
