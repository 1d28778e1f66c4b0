import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, symlinkSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metadata, status, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import {
  BuildRequest,
  BuildStatus,
  CloneTargetMode,
  GitAuthMethod,
  GitInitializer,
  LogsRequest,
  ResolveBaseImageRequest,
  ResolveWorkspaceImageRequest,
  type BuildSource,
  type ImageBuilderClient,
  type WorkspaceInitializer,
} from '@imgbuilder/proto';
import { ObjectStore, objectStoreOptions } from '@imgbuilder/common/object-store';
import { loadEnv } from '@imgbuilder/common/config';
import { build, collect, connect, listBuilds, refusedByApi, resolveBase, resolveWorkspace } from '../support/client.js';
import { FakeRegistry } from '../support/fake-registry.js';
import { GitServer } from '../../testkit/git-server.js';
import { dumpNamespace } from '../support/redis-dump.js';
import { BASE_IMAGE, composite, dockerfile, downloadInit, emptyInit, fileSource, gitInit, rand, sha256, snapshotInit } from '../../testkit/requests.js';
import { tarOf } from '../support/tar.js';
import { lastOf } from '../support/streams.js';
import { SourceServer } from '../support/source-server.js';
import { NetnsHost } from '../support/netns-host.js';
import { startStack, type Stack } from '../../testkit/stack.js';

/**
 * Each attack of issue 11 against the real stack: requests a hostile user could send, and what must not happen.
 * The stack runs with small caps so the limits are reached cheaply.
 */
const MAX_CONTEXT_FILES = 40;
const LISTED_BUCKET = `listed-${randomBytes(3).toString('hex')}`;

/**
 * Servers this file starts inside its tests listen here. The stack's fetch policy allows this address, and the git and
 * source servers by host:port, but not 127.0.0.1 as a whole: that is where the fetch policy's canary listens.
 */
const TEST_LOOPBACK = '127.0.0.2';

let stack: Stack;
let git: GitServer;
let src: SourceServer;
let api: ImageBuilderClient;
let objects: ObjectStore;

beforeAll(async () => {
  git = await GitServer.start();
  src = await SourceServer.start(git.root, 'user', 'password');
  stack = await startStack({
    apis: 1,
    workers: 1,
    env: {
      IMGBUILDER_MAX_CONTEXT_FILES: String(MAX_CONTEXT_FILES),
      IMGBUILDER_LS_REMOTE_CONCURRENCY: '2',
      IMGBUILDER_LS_REMOTE_TIMEOUT: '2s',
      IMGBUILDER_SNAPSHOT_SOURCES: `${LISTED_BUCKET},other-bucket/team-a/`,
      IMGBUILDER_FETCH_ALLOW: `${TEST_LOOPBACK}/32,127.0.0.1:${git.port},127.0.0.1:${src.port}`,
    },
  });
  api = connect(stack.apiAddrs[0]);
  objects = new ObjectStore(objectStoreOptions(loadEnv(stack.env)));
});

afterAll(async () => {
  api?.close();
  src?.stop();
  git?.stop();
  await stack?.stop();
});



/** A file served by the source server, as a download entry. */
function served(filePath: string, content: string, query = ''): { url: string; filePath: string; digest: string } {
  return { url: src.file(`/f-${rand()}`, content) + query, filePath, digest: sha256(content) };
}



/** Git config that runs `touch <marker>` on the worker at checkout, as the issue's reproduction planted it. */
function plantedGit(marker: string): { config: string; attributes: string } {
  return { config: `[filter "x"]\n\tsmudge = touch ${marker} && cat\n\trequired = false\n`, attributes: '* filter=x\n' };
}

describe('git metadata from other sources never runs on the worker', () => {
  it('a download writing src/.git (config with a smudge filter) before a checkout at src: INVALID_ARGUMENT, nothing runs', async () => {
    const marker = join(tmpdir(), `imgbuilder-pwned-${rand()}`);
    const planted = plantedGit(marker);
    git.commit('pwn-download', { Dockerfile: dockerfile('echo x'), 'a.txt': 'a' });
    const source = fileSource(
      composite(downloadInit([served('config', planted.config), served('info/attributes', planted.attributes)], 'src/.git'), gitInit({ remoteUri: git.url('pwn-download'), checkoutLocation: 'src' })),
      { dockerfilePath: 'src/Dockerfile' },
    );
    await refusedByApi(api, source, /download target_location "src\/\.git" has a \.git part: git metadata may only come from a git initializer/);
    // The same through file_path, and a checkout over a directory an earlier download filled.
    const viaPath = composite(downloadInit([served('src/.GIT/config', planted.config)]), gitInit({ remoteUri: git.url('pwn-download'), checkoutLocation: 'src' }));
    await refusedByApi(api, fileSource(viaPath, { dockerfilePath: 'src/Dockerfile' }), /download file_path "src\/\.GIT\/config" has a \.git part/);
    const over = composite(downloadInit([served('src/notes.txt', 'x')]), gitInit({ remoteUri: git.url('pwn-download'), checkoutLocation: 'src' }));
    await refusedByApi(api, fileSource(over, { dockerfilePath: 'src/Dockerfile' }), /git checkout_location "src" is not empty: an earlier initializer writes "src\/notes.txt"; a git checkout must go into an empty or new directory/);
    expect(existsSync(marker)).toBe(false);
  });

  it('a snapshot holding src/.git before a checkout at src: done_failure, nothing runs; a snapshot filling src: done_failure', async () => {
    const marker = join(tmpdir(), `imgbuilder-pwned-${rand()}`);
    const planted = plantedGit(marker);
    git.commit('pwn-snapshot', { Dockerfile: dockerfile('echo x'), 'a.txt': 'a' });
    const gitKey = `snapshots/pwn-${rand()}.tar`;
    const fullKey = `snapshots/full-${rand()}.tar`;
    await objects.put(gitKey, await tarOf([{ name: 'src/.git/config', content: planted.config }, { name: 'src/.git/info/attributes', content: planted.attributes }]), 'application/x-tar');
    await objects.put(fullKey, await tarOf([{ name: 'src/left-over.txt', content: 'x' }]), 'application/x-tar');
    const checkout = gitInit({ remoteUri: git.url('pwn-snapshot'), checkoutLocation: 'src' });
    const [planted1, filled] = await Promise.all([
      build(api, { source: fileSource(composite(snapshotInit(gitKey), checkout), { dockerfilePath: 'src/Dockerfile' }) }),
      build(api, { source: fileSource(composite(snapshotInit(fullKey), checkout), { dockerfilePath: 'src/Dockerfile' }) }),
    ]);
    expect(lastOf(planted1)).toMatchObject({ status: BuildStatus.done_failure, message: expect.stringMatching(/it holds src\/\.git.*: a \.git path part is refused outside prebuild snapshots/) });
    expect(lastOf(filled)).toMatchObject({ status: BuildStatus.done_failure, message: expect.stringMatching(/git checkout_location src is not empty \(it holds left-over\.txt\): a git checkout must go into an empty or new directory/) });
    expect(existsSync(marker)).toBe(false);
  });
});

describe('writes stay inside the build directory', () => {
  it('a checked-out symlink to a directory outside, then a download or a checkout through it: done_failure, nothing written outside', async () => {
    const outside = mkdtempSync(join(tmpdir(), 'imgbuilder-outside-'));
    git.commit('symlinked', { Dockerfile: dockerfile('echo x') });
    symlinkSync(outside, join(git.root, 'symlinked', 'out'));
    git.commit('symlinked', {});
    git.commit('inner', { 'inner.txt': 'inner' });
    const repo = gitInit({ remoteUri: git.url('symlinked') });
    const [viaDownload, viaCheckout] = await Promise.all([
      build(api, { source: fileSource(composite(repo, downloadInit([served('out/pwned.txt', 'pwned')]))) }),
      build(api, { source: fileSource(composite(repo, gitInit({ remoteUri: git.url('inner'), checkoutLocation: 'out/sub' }))) }),
    ]);
    expect(lastOf(viaDownload)).toMatchObject({ status: BuildStatus.done_failure, message: expect.stringMatching(/download of out\/pwned\.txt: out is a symlink; writes through symlinks are refused/) });
    expect(lastOf(viaCheckout)).toMatchObject({ status: BuildStatus.done_failure, message: expect.stringMatching(/git checkout_location: out is a symlink; writes through symlinks are refused/) });
    expect(existsSync(join(outside, 'pwned.txt'))).toBe(false);
    expect(existsSync(join(outside, 'sub'))).toBe(false);
  });
});

describe('snapshots come from allowed places only', () => {
  it('another bucket, keys outside snapshots/, ".." keys: INVALID_ARGUMENT; listed buckets and prefixes pass', async () => {
    const own = stack.env.IMGBUILDER_S3_BUCKET;
    for (const name of [`s3://not-listed-${rand()}/snapshots/x.tar`, `s3://${own}/logs/x`, 'prebuilds/x.tar', 'snapshots/../logs/x', 's3://other-bucket/team-b/x.tar']) {
      await refusedByApi(api, fileSource(snapshotInit(name)), /is refused: snapshots are read from snapshots\/ in the service's own bucket .* IMGBUILDER_SNAPSHOT_SOURCES|"\." and "\.\." parts are refused/);
    }
    const prebuild: WorkspaceInitializer = {
      spec: { $case: 'prebuild', prebuild: { prebuild: { snapshot: `s3://not-listed/x.tar`, fromVolumeSnapshot: false }, git: [GitInitializer.fromPartial({ remoteUri: git.url('any'), targetMode: CloneTargetMode.REMOTE_COMMIT, cloneTaget: 'a'.repeat(40) })] } },
    };
    await refusedByApi(api, fileSource(prebuild), /IMGBUILDER_SNAPSHOT_SOURCES/);
    for (const name of [`s3://${LISTED_BUCKET}/any/key.tar`, 's3://other-bucket/team-a/x.tar', `s3://${own}/snapshots/x.tar`]) {
      await expect(resolveWorkspace(api, { source: fileSource(snapshotInit(name)) })).resolves.toMatchObject({ status: BuildStatus.unknown });
    }
  });

  it('directory entries count toward IMGBUILDER_MAX_CONTEXT_FILES', async () => {
    const key = `snapshots/dirs-${rand()}.tar`;
    const dirs = Array.from({ length: MAX_CONTEXT_FILES + 10 }, (_, i) => ({ name: `d${i}/`, type: 'directory' as const }));
    await objects.put(key, await tarOf([{ name: 'Dockerfile', content: dockerfile('echo x') }, ...dirs]), 'application/x-tar');
    const msgs = await build(api, { source: fileSource(snapshotInit(key)) });
    expect(lastOf(msgs)).toMatchObject({ status: BuildStatus.done_failure, message: expect.stringContaining(`more than ${MAX_CONTEXT_FILES} files (IMGBUILDER_MAX_CONTEXT_FILES)`) });
    expect(stack.workers[0].child.exitCode).toBeNull();
  });
});

/**
 * A TCP server that accepts connections and never answers: a git remote that hangs. Tracks open connections. With
 * `reset`, a canary that counts who connects and resets them at once (a leak then fails fast instead of hanging).
 */
async function blackHole(address = TEST_LOOPBACK, reset = false): Promise<{ stop: () => void; host: string; seen: () => number; peak: () => number; waitSeen: (n: number, ms: number) => Promise<void> }> {
  const open = new Set<Socket>();
  const all = new Set<Socket>();
  let seen = 0;
  let peak = 0;
  let waiters: (() => void)[] = [];
  const server = createServer((s) => {
    seen++;
    open.add(s);
    all.add(s);
    peak = Math.max(peak, open.size);
    // The peer going away (git killed at its timeout) ends the connection: 'end' comes first, 'close' after.
    s.on('end', () => open.delete(s)).on('close', () => open.delete(s));
    s.on('error', () => undefined);
    if (reset) s.resetAndDestroy();
    else s.resume();
    for (const w of waiters) w();
  });
  await new Promise<void>((resolve) => server.listen(0, address, resolve));
  const host = `${address}:${(server.address() as { port: number }).port}`;
  const waitSeen = (n: number, ms: number) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (seen < n) return;
        clearTimeout(timer);
        waiters = waiters.filter((w) => w !== check);
        resolve();
      };
      const timer = setTimeout(() => reject(new Error(`only ${seen} of ${n} connections within ${ms} ms`)), ms);
      waiters.push(check);
      check();
    });
  const stop = () => {
    for (const s of all) s.destroy();
    server.close();
  };
  return { stop, host, seen: () => seen, peak: () => peak, waitSeen };
}

describe('one request cannot spawn unbounded work', () => {
  it('more initializers, deeper composites, more download files than allowed: INVALID_ARGUMENT naming the variable; no ls-remote ran', async () => {
    const hole = await blackHole();
    try {
      const gits = Array.from({ length: 100 }, (_, i) => gitInit({ remoteUri: `git://${hole.host}/r${i}`, checkoutLocation: `c${i}` }));
      await refusedByApi(api, fileSource(composite(...gits)), /build source has more than 64 initializers \(IMGBUILDER_MAX_INITIALIZERS=64\)/);
      let deep = emptyInit;
      for (let i = 0; i < 9; i++) deep = composite(deep);
      await refusedByApi(api, fileSource(deep), /composite initializers nest more than 8 levels deep \(IMGBUILDER_MAX_COMPOSITE_DEPTH=8\)/);
      const files = Array.from({ length: 1001 }, (_, i) => ({ url: 'http://127.0.0.1:1/x', filePath: `f${i}`, digest: sha256('x') }));
      await refusedByApi(api, fileSource(downloadInit(files)), /lists 1001 files, more than IMGBUILDER_MAX_DOWNLOAD_FILES=1000/);
      expect(hole.seen()).toBe(0);
    } finally {
      hole.stop();
    }
  });

  it('ls-remote runs at most IMGBUILDER_LS_REMOTE_CONCURRENCY at a time, bounded by IMGBUILDER_LS_REMOTE_TIMEOUT; the API stays usable', async () => {
    const hole = await blackHole();
    try {
      const gits = Array.from({ length: 6 }, (_, i) => gitInit({ remoteUri: `git://${hole.host}/hang-${rand()}-${i}`, checkoutLocation: `c${i}` }));
      await expect(resolveWorkspace(api, { source: fileSource(composite(...gits)) })).rejects.toMatchObject({
        code: status.UNAVAILABLE,
        details: expect.stringMatching(/timed out|too many git remotes are being resolved at once \(IMGBUILDER_LS_REMOTE_CONCURRENCY=2\); retry shortly/),
      });
      await hole.waitSeen(2, 10_000);
      // Calls that waited longer than one run may take gave up instead of queueing: a normal request goes through.
      git.commit('after-flood', { Dockerfile: dockerfile('echo x') });
      await expect(resolveWorkspace(api, { source: fileSource(gitInit({ remoteUri: git.url('after-flood') })) })).resolves.toMatchObject({ status: BuildStatus.unknown });
      expect(hole.peak()).toBeLessThanOrEqual(2);
    } finally {
      hole.stop();
    }
  });
});

describe('download URLs are sealed', () => {
  it('no URL query string in Redis while the build runs and after it', async () => {
    const token = `tok${rand()}${rand()}`;
    const df = served('Dockerfile', dockerfile('sleep 2'), `?X-Amz-Signature=${token}`);
    const stream = api.build(BuildRequest.fromPartial({ source: fileSource(downloadInit([df])) }));
    const all = collect(stream);
    await new Promise<void>((resolve) => stream.once('data', () => resolve()));
    const during = await dumpNamespace(stack.env.REDIS_URL, stack.env.IMGBUILDER_REDIS_NAMESPACE);
    const msgs = await all;
    expect(lastOf(msgs).status, lastOf(msgs).message).toBe(BuildStatus.done_success);
    const after = await dumpNamespace(stack.env.REDIS_URL, stack.env.IMGBUILDER_REDIS_NAMESPACE);
    // The job was there (its source names the file) while the build ran.
    expect(during).toContain('filePath');
    for (const dump of [during, after]) {
      expect(dump).not.toContain(token);
      expect(dump).not.toContain('X-Amz-Signature');
    }
  });
});

/** Resolves on a stream's first message (then cancels it: a build it started goes on) or its end; rejects on error. */
function firstAnswer(stream: ClientReadableStream<unknown>): Promise<void> {
  return new Promise((resolve, reject) => {
    stream.once('data', () => {
      stream.cancel();
      resolve();
    });
    stream.on('error', (e: ServiceError) => (e.code === status.CANCELLED ? resolve() : reject(e)));
    stream.once('end', () => resolve());
  });
}

/** Every path to a string field (map keys and values, repeated strings) of `obj`, with a setter for it. */
function stringFields(obj: unknown, path = ''): { path: string; set: (root: unknown, v: string) => void }[] {
  const out: { path: string; set: (root: unknown, v: string) => void }[] = [];
  const at = (root: unknown, p: string[]) => p.reduce<Record<string, unknown>>((o, k) => o[k] as Record<string, unknown>, root as Record<string, unknown>);
  const visit = (o: unknown, keys: string[]) => {
    if (!o || typeof o !== 'object' || o instanceof Uint8Array) return;
    for (const [k, v] of Object.entries(o)) {
      const here = [...keys, k];
      if (typeof v === 'string' && k !== '$case') out.push({ path: here.join('.'), set: (root, s) => (at(root, keys)[k] = s) });
      else if (Array.isArray(v)) {
        if (typeof v[0] === 'string') out.push({ path: `${here.join('.')}[0]`, set: (root, s) => ((at(root, here) as unknown as string[])[0] = s) });
        else visit(v[0], [...here, '0']);
      } else if (v && typeof v === 'object' && (k === 'additional' || k === 'customConfig')) {
        const first = Object.keys(v)[0];
        out.push({ path: `${here.join('.')}{key}`, set: (root, s) => ((at(root, here) as Record<string, string>)[s] = 'x') });
        out.push({ path: `${here.join('.')}{value}`, set: (root, s) => ((at(root, here) as Record<string, string>)[first] = s) });
      } else visit(v, here);
    }
  };
  visit(obj, path ? path.split('.') : []);
  return out;
}

describe('status messages stay short and the channel keeps serving', () => {
  it('a 1 MB value in every string field of every rpc: each answer within 1 KiB, then a normal call on the same channel succeeds', async () => {
    const BIG = 'a'.repeat(1024 * 1024);
    const commit = git.commit('plain', { Dockerfile: dockerfile('echo plain') });
    const gitSpec = {
      remoteUri: git.url('plain'),
      upstreamRemoteUri: git.url('plain'),
      targetMode: CloneTargetMode.REMOTE_COMMIT,
      cloneTaget: commit,
      checkoutLocation: 'src',
      config: { customConfig: { 'core.autocrlf': 'false' }, authentication: GitAuthMethod.BASIC_AUTH, authUser: 'u', authPassword: 'p', authOts: 'http://127.0.0.1:1/ots' },
      fullClone: false,
    };
    const auth = { mode: { $case: 'selective' as const, selective: { allowBaserep: true, allowWorkspacerep: false, anyOf: ['127.0.0.1:5000'] } }, additional: { '127.0.0.1:5000': 'dTpw' } };
    const sources: BuildSource[] = [
      fileSource(gitInit(gitSpec), { dockerfilePath: 'src/Dockerfile', contextPath: 'src' }),
      fileSource(downloadInit([{ url: 'http://127.0.0.1:1/x', filePath: 'Dockerfile', digest: sha256('x') }], 'dir')),
      fileSource(snapshotInit('snapshots/x.tar')),
      fileSource({ spec: { $case: 'prebuild', prebuild: { prebuild: { snapshot: 'snapshots/p.tar', fromVolumeSnapshot: false }, git: [GitInitializer.fromPartial(gitSpec)] } } }),
      fileSource({ spec: { $case: 'backup', backup: { checkoutLocation: 'x', fromVolumeSnapshot: false } } }),
      { from: { $case: 'ref', ref: { ref: BASE_IMAGE } } },
    ];
    const calls: { name: string; run: (c: ImageBuilderClient) => Promise<unknown> }[] = [];
    const deadline = () => Date.now() + 30_000;
    const unary = (fn: (c: ImageBuilderClient, cb: (e: ServiceError | null) => void) => void) => (c: ImageBuilderClient) =>
      new Promise((resolve, reject) => fn(c, (e) => (e ? reject(e) : resolve(undefined))));
    const variants = <T>(name: string, template: T, run: (c: ImageBuilderClient, req: T) => Promise<unknown>) => {
      for (const f of stringFields(template)) {
        const req = structuredClone(template);
        f.set(req, BIG);
        calls.push({ name: `${name} ${f.path}`, run: (c) => run(c, req) });
      }
    };
    variants('ResolveBaseImage', ResolveBaseImageRequest.fromPartial({ ref: BASE_IMAGE, auth }), (c, r) =>
      unary((cl, cb) => cl.resolveBaseImage(r, new Metadata(), { deadline: deadline() }, cb))(c),
    );
    for (const source of sources) {
      variants('ResolveWorkspaceImage', ResolveWorkspaceImageRequest.fromPartial({ source, auth }), (c, r) =>
        unary((cl, cb) => cl.resolveWorkspaceImage(r, new Metadata(), { deadline: deadline() }, cb))(c),
      );
      variants('Build', BuildRequest.fromPartial({ source, auth, triggeredBy: 't', supervisorRef: 's', baseImageNameResolved: '' }), (c, r) => firstAnswer(c.build(r, new Metadata(), { deadline: deadline() })));
    }
    variants('Build', BuildRequest.fromPartial({ source: sources[5], baseImageNameResolved: BASE_IMAGE }), (c, r) => firstAnswer(c.build(r, new Metadata(), { deadline: deadline() })));
    variants('Logs', LogsRequest.fromPartial({ buildRef: BASE_IMAGE }), (c, r) => firstAnswer(c.logs(r, new Metadata(), { deadline: deadline() })));
    variants('Logs', LogsRequest.fromPartial({ buildId: 'b' }), (c, r) => firstAnswer(c.logs(r, new Metadata(), { deadline: deadline() })));
    expect(calls.length).toBeGreaterThan(60);

    const channel = connect(stack.apiAddrs[0]);
    try {
      for (const call of calls) {
        const err = (await call.run(channel).then(
          () => undefined,
          (e: ServiceError) => e,
        )) as ServiceError | undefined;
        if (err) {
          expect(err.code, `${call.name}: ${err.details}`).not.toBe(status.DEADLINE_EXCEEDED);
          expect(Buffer.byteLength(err.details ?? ''), call.name).toBeLessThanOrEqual(1024);
        }
        await expect(listBuilds(channel), `channel after ${call.name}`).resolves.toBeDefined();
      }
      // The issue's reproduction: a ~150 KB ref. The value is quoted short, saying how long it was.
      const ref = `127.0.0.1:5000/${'a'.repeat(150 * 1024)}`;
      const longRef = await resolveBase(channel, { ref }).catch((e: ServiceError) => e);
      expect(longRef).toMatchObject({ code: status.INVALID_ARGUMENT, details: `cannot parse image ref "${ref.slice(0, 100)}…" (${ref.length} characters): it is too long` });
      await expect(resolveBase(channel, { ref: BASE_IMAGE })).resolves.toMatchObject({ ref: expect.stringContaining('@sha256:') });
    } finally {
      channel.close();
    }
  });
});

describe('registry tokens and redirects', () => {
  const DIGEST = `sha256:${'d'.repeat(64)}`;
  const manifest = { 'docker-content-digest': DIGEST, 'content-type': 'application/vnd.docker.distribution.manifest.v2+json' };
  const basic = (user: string, pw: string) => `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}`;
  const additional = (host: string, user: string, pw: string) => ({ additional: { [host]: Buffer.from(`${user}:${pw}`).toString('base64') } });
  const fakeRegistry = (handler: Parameters<typeof FakeRegistry.start>[0]) => FakeRegistry.start(handler, TEST_LOOPBACK);

  it('a cached bearer token is never handed to the same user name with another password', async () => {
    const good = `good-${rand()}`;
    let registry: FakeRegistry | undefined;
    registry = await fakeRegistry((req, reply) => {
      if (req.path.startsWith('/token')) {
        if (req.headers.authorization === basic('oauth2accesstoken', good)) return reply(200, { 'content-type': 'application/json' }, JSON.stringify({ token: 'tok-good', expires_in: 300 }));
        return reply(401);
      }
      if (req.headers.authorization === 'Bearer tok-good') return reply(200, manifest);
      reply(401, { 'www-authenticate': `Bearer realm="http://${registry!.host}/token",service="fake"` });
    });
    try {
      const ref = `${registry.host}/team/image:latest`;
      await expect(resolveBase(api, { ref, auth: additional(registry.host, 'oauth2accesstoken', good) })).resolves.toMatchObject({ ref: `${registry.host}/team/image@${DIGEST}` });
      await expect(resolveBase(api, { ref, auth: additional(registry.host, 'oauth2accesstoken', 'guessed') })).rejects.toMatchObject({ code: status.UNAUTHENTICATED });
      await expect(resolveBase(api, { ref })).rejects.toMatchObject({ code: status.UNAUTHENTICATED });
    } finally {
      registry.stop();
    }
  });

  it('no Authorization on a redirect to another origin; a token realm outside the URL policy is not fetched', async () => {
    const target = await fakeRegistry((_req, reply) => reply(200, manifest));
    let origin: FakeRegistry | undefined;
    origin = await fakeRegistry((req, reply) => {
      if (req.headers.authorization !== basic('u', 'pw')) return reply(401, { 'www-authenticate': 'Basic realm="fake"' });
      reply(307, { location: `http://${target.host}${req.path}` });
    });
    const realmHits = await fakeRegistry((_req, reply) => reply(200, { 'content-type': 'application/json' }, '{"token":"t"}'));
    const badRealm = await fakeRegistry((_req, reply) => reply(401, { 'www-authenticate': `Bearer realm="http://0.0.0.0:${realmHits.port}/token",service="fake"` }));
    try {
      await expect(resolveBase(api, { ref: `${origin.host}/team/image:latest`, auth: additional(origin.host, 'u', 'pw') })).resolves.toMatchObject({ ref: expect.stringContaining(DIGEST) });
      expect(target.requests.length).toBeGreaterThan(0);
      expect(target.requests.map((r) => r.headers.authorization ?? '')).toEqual(target.requests.map(() => ''));

      await expect(resolveBase(api, { ref: `${badRealm.host}/team/image:latest`, auth: additional(badRealm.host, 'u', 'pw') })).rejects.toMatchObject({
        code: status.FAILED_PRECONDITION,
        details: expect.stringMatching(/token service of registry 127\.0\.0\.2:\d+: http:\/\/0\.0\.0\.0:\d+\/token is refused by the fetch policy \(0\.0\.0\.0 is unspecified/),
      });
      expect(realmHits.requests).toHaveLength(0);
    } finally {
      for (const r of [target, origin, realmHits, badRealm]) r.stop();
    }
  });
});

describe('the fetch policy: nothing fetched for a build reaches a loopback port that is not allowed (issue 20)', () => {
  // The canary is where the engine's API, Redis or the object store would be: 127.0.0.1, on a port not allowed.
  let canary: Awaited<ReturnType<typeof blackHole>>;
  beforeAll(async () => {
    canary = await blackHole('127.0.0.1', true);
  });
  afterAll(() => canary?.stop());
  const REFUSED = /is refused by the fetch policy \(.*IMGBUILDER_FETCH_ALLOW/;
  const port = () => canary.host.split(':')[1];

  it('downloads, git remotes and image refs naming it, by address or as localhost: INVALID_ARGUMENT, no connection', async () => {
    const digest = sha256('x');
    await refusedByApi(api, fileSource(downloadInit([{ url: `http://${canary.host}/images/x/get?token=secret`, filePath: 'Dockerfile', digest }])), /^download url: http:\/\/127\.0\.0\.1:\d+\/images\/x\/get is refused by the fetch policy \(127\.0\.0\.1 is loopback; IMGBUILDER_FETCH_ALLOW/);
    await refusedByApi(api, fileSource(downloadInit([{ url: `http://localhost:${port()}/x`, filePath: 'Dockerfile', digest }])), /localhost resolves to 127\.0\.0\.1; 127\.0\.0\.1 is loopback/);
    await refusedByApi(api, fileSource(gitInit({ remoteUri: `git://${canary.host}/repo` })), REFUSED);
    // A branch would be resolved with ls-remote at the API: the name is checked first.
    await refusedByApi(api, fileSource(gitInit({ remoteUri: `http://localhost:${port()}/repo.git`, targetMode: CloneTargetMode.REMOTE_BRANCH, cloneTaget: 'main' })), REFUSED);
    for (const ref of [`${canary.host}/x:y`, `localhost:${port()}/x:y`]) {
      await expect(resolveBase(api, { ref }), ref).rejects.toMatchObject({ code: status.INVALID_ARGUMENT, details: expect.stringMatching(/^cannot resolve image .* is refused by the fetch policy \((localhost resolves to 127\.0\.0\.1; )?127\.0\.0\.1 is loopback/) });
    }
    expect(canary.seen()).toBe(0);
  });

  it('redirects from an allowed server to it: done_failure naming the URL without its query, or INVALID_ARGUMENT from ls-remote; no connection', async () => {
    const download = src.redirect(`/r/${rand()}`, `http://localhost:${port()}/images/x/get?sig=secret`);
    const repo = `/redirected-${rand()}`;
    src.redirect(`${repo}/info/refs`, `http://${canary.host}/repo/info/refs?service=git-upload-pack`);
    const pinned = gitInit({ remoteUri: src.base + repo, targetMode: CloneTargetMode.REMOTE_COMMIT, cloneTaget: 'c'.repeat(40) });
    const [viaDownload, viaGit] = await Promise.all([build(api, { source: fileSource(downloadInit([{ url: download, filePath: 'Dockerfile', digest: sha256('x') }])) }), build(api, { source: fileSource(pinned) })]);
    expect(lastOf(viaDownload)).toMatchObject({ status: BuildStatus.done_failure, message: expect.stringMatching(/^build failed: .*download of Dockerfile \(redirect\): http:\/\/localhost:\d+\/images\/x\/get is refused by the fetch policy/) });
    expect(lastOf(viaDownload).message).not.toContain('secret');
    expect(lastOf(viaGit)).toMatchObject({ status: BuildStatus.done_failure, message: expect.stringMatching(/^build failed: .*git remote_uri: http:\/\/127\.0\.0\.1:\d+\/repo\/info\/refs is refused by the fetch policy/) });
    // The same remote followed by the API's ls-remote (a branch to resolve).
    const branch = gitInit({ remoteUri: src.base + repo, targetMode: CloneTargetMode.REMOTE_BRANCH, cloneTaget: 'main' });
    await expect(resolveWorkspace(api, { source: fileSource(branch) })).rejects.toMatchObject({ code: status.INVALID_ARGUMENT, details: expect.stringMatching(REFUSED) });
    expect(canary.seen()).toBe(0);
  });
});

describe('image refs naming a metadata address', () => {
  let meta: NetnsHost;
  beforeAll(async () => {
    // The metadata address lives on a test host in a namespace this test creates: if the policy failed, the
    // connection would land there, never off this machine.
    meta = await NetnsHost.start({ extraAddresses: ['169.254.169.254'], token: 'metadata', ports: [80, 443] });
  });
  afterAll(() => meta?.stop());

  it('ResolveBaseImage and a ref source refuse 169.254.169.254 in any spelling without connecting to it', async () => {
    for (const ref of ['169.254.169.254/latest/meta-data:x', '169.254.169.254:80/x:y']) {
      const err = await resolveBase(api, { ref }).then(() => undefined, (e: ServiceError) => e);
      expect(err?.code === status.INVALID_ARGUMENT || err?.code === status.FAILED_PRECONDITION, `${ref}: ${err?.code} ${err?.details}`).toBe(true);
    }
    const viaRef = await build(api, { source: { from: { $case: 'ref', ref: { ref: '169.254.169.254/x:y' } } } }).then(() => undefined, (e: ServiceError) => e);
    expect(viaRef?.code === status.INVALID_ARGUMENT || viaRef?.code === status.FAILED_PRECONDITION).toBe(true);
    expect(meta.hits).toBe(0);
  });
});
