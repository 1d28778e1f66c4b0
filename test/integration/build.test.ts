import { createServer as createHttpServer } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status } from '@grpc/grpc-js';
import { BuildStatus, CloneTargetMode, type ImageBuilderClient } from '@imgbuilder/proto';
import { build, collect, connect, listBuilds, logs, resolveBase, resolveWorkspace } from '../support/client.js';
import { GitServer } from '../../testkit/git-server.js';
import { BASE_IMAGE, dockerfile, gitSource } from '../../testkit/requests.js';
import { freePort, startStack, type Stack } from '../../testkit/stack.js';
import { manifestPuts as countManifestPuts } from '../support/scenarios.js';
import { allowTestServers } from '../../testkit/fetch-allow.js';
import { prepareContext } from '../../apps/worker/src/build-context.js';
import { ClassicBuilder } from '../../apps/worker/src/builder/classic-builder.js';
import { checkImageRegistry, rewriteDockerfile } from '../../apps/worker/src/builder/dockerfile-rewrite.js';
import { fetchAddSource } from '../../apps/worker/src/builder/dockerfile-add.js';
import { createDocker, DockerEngine } from '../../apps/worker/src/docker-engine.js';

let stack: Stack;
let git: GitServer;
let a: ImageBuilderClient;
let b: ImageBuilderClient;

beforeAll(async () => {
  [stack, git] = await Promise.all([startStack({ apis: 2, workers: 2 }), GitServer.start()]);
  a = connect(stack.apiAddrs[0]);
  b = connect(stack.apiAddrs[1]);
});

afterAll(async () => {
  a?.close();
  b?.close();
  git?.stop();
  await stack?.stop();
});

/** Manifest PUTs the registry logged for `ref` (see test/support/scenarios.ts). */
const manifestPuts = (ref: string) => countManifestPuts(stack, ref);

const terminal = (msgs: { status: BuildStatus }[]) => msgs.filter((m) => m.status === BuildStatus.done_success || m.status === BuildStatus.done_failure);

describe('Build', () => {
  it('12 concurrent builds of one ref over two API processes share one build, one build_id and one push', async () => {
    git.commit('dedupe', { Dockerfile: dockerfile('echo dedupe-step', 'sleep 2') });
    const req = { source: gitSource(git.url('dedupe')) };
    const calls = Array.from({ length: 12 }, (_, i) => build(i % 2 ? b : a, req));
    const results = await Promise.all(calls);
    const ids = new Set(results.map((r) => r[0].info?.buildId));
    expect(ids.size).toBe(1);
    expect([...ids][0]).toBeTruthy();
    for (const r of results) {
      expect(r[0].status).toBe(BuildStatus.running);
      expect(r[0].info?.startedAt).not.toBe('0');
      expect(terminal(r)).toHaveLength(1);
      expect(r[r.length - 1].status).toBe(BuildStatus.done_success);
      expect(r.every((m) => m.ref === r[0].ref && m.baseRef === r[0].baseRef)).toBe(true);
    }
    const ref = results[0][0].ref;
    expect(manifestPuts(ref)).toBe(1);
    expect(manifestPuts(results[0][0].baseRef)).toBe(1);

    // Now the image exists: one done_success message and nothing else.
    const again = await build(b, req);
    expect(again).toHaveLength(1);
    expect(again[0]).toMatchObject({ status: BuildStatus.done_success, ref, baseRef: results[0][0].baseRef });

    // force_rebuild while a build of the ref runs joins it rather than starting a second one.
    git.commit('dedupe-force', { Dockerfile: dockerfile('sleep 2') });
    const forceReq = { source: gitSource(git.url('dedupe-force')), forceRebuild: true };
    const joined = await Promise.all([build(a, forceReq), build(b, forceReq), build(a, forceReq)]);
    expect(new Set(joined.map((r) => r[0].info?.buildId)).size).toBe(1);
    expect(manifestPuts(joined[0][0].ref)).toBe(1);

    // force_rebuild builds anew after the first job finished (BullMQ job ids are not reused).
    const forced = await build(a, { ...req, forceRebuild: true });
    expect(forced[0].info?.buildId).not.toBe([...ids][0]);
    expect(forced[forced.length - 1].status).toBe(BuildStatus.done_success);
    expect(manifestPuts(ref)).toBe(2);
  });

  it('a failing RUN step ends done_failure naming the step and the error, and the stream ends OK', async () => {
    git.commit('failing', { Dockerfile: dockerfile('echo about-to-fail && exit 7') });
    const msgs = await build(a, { source: gitSource(git.url('failing')) });
    const last = msgs[msgs.length - 1];
    expect(terminal(msgs)).toHaveLength(1);
    expect(last.status).toBe(BuildStatus.done_failure);
    expect(last.message).toContain('RUN echo about-to-fail && exit 7');
    // Classic: "returned a non-zero code: 7"; BuildKit: "exit code: 7".
    expect(last.message).toMatch(/(non-zero|exit) code: 7$/);
    const text = await logs(b, { buildId: msgs[0].info!.buildId });
    expect(text).toContain('about-to-fail');
  });

  it('a missing Dockerfile ends done_failure naming the path', async () => {
    git.commit('nodockerfile', { 'README.md': 'no dockerfile here' });
    const msgs = await build(a, { source: gitSource(git.url('nodockerfile'), { dockerfilePath: 'sub/Containerfile' }) });
    expect(msgs[msgs.length - 1]).toMatchObject({ status: BuildStatus.done_failure });
    expect(msgs[msgs.length - 1].message).toContain('sub/Containerfile');
  });

  it('builds each clone target mode, at the commit or branch asked for', async () => {
    const first = git.commit('modes', { Dockerfile: dockerfile('echo v1 > /version') });
    git.commit('modes', { Dockerfile: dockerfile('echo v2 > /version') });
    git.commit('modes', { Dockerfile: dockerfile('echo feature > /version') }, 'feature');
    const cases = [
      { mode: CloneTargetMode.REMOTE_COMMIT, target: first, expect: 'echo v1' },
      { mode: CloneTargetMode.REMOTE_BRANCH, target: 'feature', expect: 'echo feature' },
      { mode: CloneTargetMode.LOCAL_BRANCH, target: 'main', expect: 'echo v2' },
      { mode: CloneTargetMode.REMOTE_HEAD, target: '', expect: 'echo v2' },
    ];
    const results = await Promise.all(cases.map((c) => build(a, { source: gitSource(git.url('modes'), { mode: c.mode, target: c.target }) })));
    for (const [i, msgs] of results.entries()) {
      expect(msgs[msgs.length - 1].status, JSON.stringify(msgs[msgs.length - 1])).toBe(BuildStatus.done_success);
      const text = await logs(b, { buildId: msgs[0].info!.buildId });
      expect(text).toContain(cases[i].expect);
    }
  });

  it('copies a ref source to the workspace repository', async () => {
    const msgs = await build(b, { source: { from: { $case: 'ref', ref: { ref: BASE_IMAGE } } } });
    const last = msgs[msgs.length - 1];
    expect(last.status, last.message).toBe(BuildStatus.done_success);
    expect(last.baseRef).toMatch(/^127\.0\.0\.1:5000\/imgbuilder\/busybox@sha256:[a-f0-9]{64}$/);
    expect(last.ref.startsWith(stack.env.IMGBUILDER_WORKSPACE_REPOSITORY + ':')).toBe(true);
  });

  it('rejects bad requests with INVALID_ARGUMENT', async () => {
    await expect(build(a, {})).rejects.toMatchObject({ code: status.INVALID_ARGUMENT, details: 'build source is missing' });
    await expect(build(a, { source: gitSource(git.url('x'), { contextPath: '../outside' }) })).rejects.toMatchObject({ code: status.INVALID_ARGUMENT });
    await expect(build(a, { source: gitSource(git.url('x'), { dockerfilePath: '/etc/passwd' }) })).rejects.toMatchObject({ code: status.INVALID_ARGUMENT });
    await expect(build(a, { source: { from: { $case: 'ref', ref: { ref: 'UPPER/Case::bad' } } } })).rejects.toMatchObject({ code: status.INVALID_ARGUMENT });
  });
});

describe('ResolveWorkspaceImage, ListBuilds and Logs while a build runs', () => {
  it('report a queued or running build as running everywhere, and Logs streams until the build ends', async () => {
    git.commit('slow', { Dockerfile: dockerfile('echo slow-start', 'sleep 3', 'echo slow-end') });
    const source = gitSource(git.url('slow'));
    const before = await resolveWorkspace(a, { source, auth: undefined, useRetryClient: false });
    expect(before.status).toBe(BuildStatus.unknown);
    expect(before.baseRef).toMatch(/\/base:[a-f0-9]{64}$/);

    const stream = a.build({ source, auth: undefined, forceRebuild: false, triggeredBy: 'test', supervisorRef: '', baseImageNameResolved: '', useRetryClient: false });
    const done = collect(stream);
    const first = await new Promise<{ info?: { buildId: string } }>((resolve) => stream.once('data', resolve));
    const buildId = first.info!.buildId;

    const during = await resolveWorkspace(b, { source, auth: undefined, useRetryClient: false });
    expect(during).toMatchObject({ status: BuildStatus.running, ref: before.ref, baseRef: before.baseRef });
    const list = await listBuilds(b);
    const listed = list.builds.find((x) => x.buildId === buildId);
    expect(listed).toMatchObject({ ref: before.ref, baseRef: before.baseRef, status: BuildStatus.running });
    expect(Number(listed!.startedAt)).toBeGreaterThan(0);

    const byRef = await logs(b, { buildRef: before.ref });
    expect(byRef).toContain('slow-start');
    expect(byRef).toContain('slow-end');
    await done;
    const after = await resolveWorkspace(a, { source, auth: undefined, useRetryClient: false });
    expect(after.status).toBe(BuildStatus.done_success);
    expect((await listBuilds(b)).builds.find((x) => x.buildId === buildId)).toBeUndefined();
  });

  it('Logs of an unknown build is NOT_FOUND "build not found"', async () => {
    await expect(logs(a, { buildId: 'no-such-build' })).rejects.toMatchObject({ code: status.NOT_FOUND, details: 'build not found' });
    await expect(logs(a, { buildRef: '127.0.0.1:5000/nothing/here:abc' })).rejects.toMatchObject({ code: status.NOT_FOUND, details: 'build not found' });
  });
});

describe('ResolveBaseImage', () => {
  it('turns a tag into the digest form with the tag dropped', async () => {
    const res = await resolveBase(a, { ref: BASE_IMAGE, auth: undefined, useRetryClient: false });
    expect(res.ref).toMatch(/^127\.0\.0\.1:5000\/imgbuilder\/busybox@sha256:[a-f0-9]{64}$/);
    const byDigest = await resolveBase(a, { ref: res.ref, auth: undefined, useRetryClient: false });
    expect(byDigest.ref).toBe(res.ref);
  });

  it('resolves a manifest list / OCI index to its linux/amd64 entry', async () => {
    const registry = 'http://127.0.0.1:5000/v2/imgbuilder/busybox/manifests';
    const res = await fetch(`${registry}/latest`, { headers: { Accept: 'application/vnd.docker.distribution.manifest.v2+json' } });
    const manifest = await res.text();
    const amd64 = res.headers.get('docker-content-digest')!;
    // A second manifest of the same content with other bytes: another digest, for the arm64 entry listed first.
    const variant = JSON.stringify(JSON.parse(manifest), null, 1);
    const put = await fetch(`${registry}/variant-${process.pid}`, { method: 'PUT', body: variant, headers: { 'Content-Type': 'application/vnd.docker.distribution.manifest.v2+json' } });
    expect(put.status).toBe(201);
    const arm64 = put.headers.get('docker-content-digest')!;
    expect(arm64).not.toBe(amd64);
    const entry = (digest: string, size: number, architecture: string) => ({ mediaType: 'application/vnd.docker.distribution.manifest.v2+json', digest, size, platform: { architecture, os: 'linux' } });
    const index = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [entry(arm64, Buffer.byteLength(variant), 'arm64'), entry(amd64, Buffer.byteLength(manifest), 'amd64')] };
    const putIndex = await fetch(`${registry}/multi-${process.pid}`, { method: 'PUT', body: JSON.stringify(index), headers: { 'Content-Type': 'application/vnd.oci.image.index.v1+json' } });
    expect(putIndex.status).toBe(201);
    const resolved = await resolveBase(a, { ref: `127.0.0.1:5000/imgbuilder/busybox:multi-${process.pid}` });
    expect(resolved.ref).toBe(`127.0.0.1:5000/imgbuilder/busybox@${amd64}`);
  });

  it('answers NOT_FOUND, UNAVAILABLE and INVALID_ARGUMENT as Gitpod callers expect', async () => {
    await expect(resolveBase(a, { ref: '127.0.0.1:5000/imgbuilder/busybox:missing', auth: undefined, useRetryClient: false })).rejects.toMatchObject({
      code: status.NOT_FOUND,
      details: expect.stringContaining('cannot resolve image'),
    });
    const closedPort = await freePort();
    await expect(resolveBase(a, { ref: `127.0.0.1:${closedPort}/nothing:latest`, auth: undefined, useRetryClient: false })).rejects.toMatchObject({
      code: status.UNAVAILABLE,
      details: expect.stringContaining('cannot resolve image'),
    });
    await expect(resolveBase(a, { ref: 'Not A Ref', auth: undefined, useRetryClient: false })).rejects.toMatchObject({ code: status.INVALID_ARGUMENT });
  });
});

// The builds are independent and small: they run side by side (CI time).
describe.concurrent('what the engine fetches and shares on a build\'s behalf', () => {
  /** A TCP server on 127.0.0.2 (loopback, outside the stack's IMGBUILDER_FETCH_ALLOW) counting connections. */
  async function canary(): Promise<{ port: number; connections: () => number; close: () => void }> {
    let n = 0;
    const server = createNetServer((s) => {
      n++;
      s.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.2', resolve));
    return { port: (server.address() as AddressInfo).port, connections: () => n, close: () => server.close() };
  }

  const images: string[] = [];
  afterAll(async () => {
    const engine = new DockerEngine(createDocker(stack.env.DOCKER_HOST), 'test');
    for (const image of images) await engine.docker.getImage(image).remove().catch(() => undefined);
  });

  /**
   * Builds `lines` on the engine directly (no rewrite). `registry`: pushed to the local registry and removed from
   * the engine; otherwise only in the engine. Returns the image's name.
   */
  async function baseImage(lines: string[], where: 'registry' | 'engine'): Promise<string> {
    const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-base-'));
    writeFileSync(join(dir, 'Dockerfile'), `${lines.join('\n')}\n`);
    const repo = `${where === 'registry' ? '127.0.0.1:5000/' : ''}dftest${Math.random().toString(36).slice(2, 10)}/base`;
    const engine = new DockerEngine(createDocker(stack.env.DOCKER_HOST), 'test');
    const ctx = await prepareContext(dir, 'Dockerfile', '', { maxBytes: 1 << 20, maxFiles: 10 });
    await new ClassicBuilder(engine).build(ctx.tar(), { tag: `${repo}:1`, dockerfile: ctx.dockerfile, registryconfig: {}, signal: AbortSignal.timeout(60_000) }, () => undefined);
    images.push(`${repo}:1`);
    if (where === 'registry') {
      await engine.push(repo, '1', undefined, AbortSignal.timeout(60_000), () => undefined);
      await engine.docker.getImage(`${repo}:1`).remove().catch(() => undefined);
    }
    return `${repo}:1`;
  }

  it('ADD <url>, a syntax frontend, a FROM registry and a base image\'s ONBUILD ADD (in the registry or only in the engine) aimed at a loopback canary: done_failure each, zero connections', async ({ expect }) => {
    const c = await canary();
    try {
      const trigger = [`FROM ${BASE_IMAGE}`, `ONBUILD ADD http://127.0.0.2:${c.port}/onbuild /x`];
      const [onbuildBase, localBase] = await Promise.all([baseImage(trigger, 'registry'), baseImage(trigger, 'engine')]);
      const cases = {
        add: [`FROM ${BASE_IMAGE}`, `ADD http://127.0.0.2:${c.port}/secret /secret`, 'RUN cat /secret'],
        frontend: [`# syntax=127.0.0.2:${c.port}/evil/frontend:1`, `FROM ${BASE_IMAGE}`, 'RUN echo x'],
        from: [`FROM 127.0.0.2:${c.port}/evil/base:1`, 'RUN echo x'],
        onbuild: [`FROM ${onbuildBase}`, 'RUN echo x'],
        local: [`FROM ${localBase}`, 'RUN echo x'],
      };
      for (const [name, lines] of Object.entries(cases)) git.commit(`canary-${name}`, { Dockerfile: `${lines.join('\n')}\n` });
      const [add, frontend, from, onbuild, local] = await Promise.all(Object.keys(cases).map((name) => build(a, { source: gitSource(git.url(`canary-${name}`)) })));
      expect(add.at(-1)).toMatchObject({ status: BuildStatus.done_failure, message: expect.stringMatching(new RegExp(`^build failed: ADD http://127\\.0\\.0\\.2:${c.port}/secret.*is refused by the fetch policy.*IMGBUILDER_FETCH_ALLOW`)) });
      expect(frontend.at(-1)).toMatchObject({
        status: BuildStatus.done_failure,
        message: `build failed: Dockerfile parser directive "# syntax=127.0.0.2:${c.port}/evil/frontend:1": frontend 127.0.0.2:${c.port}/evil/frontend:1 is not allowed here (allowed: docker/dockerfile; IMGBUILDER_ALLOWED_FRONTENDS); remove the line to use the engine's own Dockerfile frontend`,
      });
      expect(from.at(-1)).toMatchObject({ status: BuildStatus.done_failure, message: expect.stringMatching(/^build failed: image 127\.0\.0\.2:\d+\/evil\/base:1.*is refused by the fetch policy/) });
      for (const [msgs, image] of [[onbuild, onbuildBase], [local, localBase]] as const) {
        expect(msgs.at(-1)).toMatchObject({ status: BuildStatus.done_failure, message: expect.stringContaining(`build failed: FROM ${image} (Dockerfile line 1): the image carries the trigger "ONBUILD ADD http://127.0.0.2:${c.port}/onbuild /x"`) });
      }
      expect(c.connections()).toBe(0);
    } finally {
      c.close();
    }
  });

  it('ADD <url> from an allowed server works: fetched by the worker, --chown/--chmod apply, mode 0600 otherwise, no unpacking, dest-dir rules', async ({ expect }) => {
    const served = new Map<string, string | Buffer>([['/dl/tool.sh', '#!/bin/sh\necho tool-ran\n'], ['/data.tgz', gzipSync(Buffer.from('not unpacked'))]]);
    const seen: string[] = [];
    const server = createHttpServer((req, res) => {
      seen.push(req.url ?? '');
      const body = served.get(req.url ?? '');
      res.writeHead(body ? 200 : 404).end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      git.commit('add-url', {
        Dockerfile: dockerfile().replace(/\n$/, '\n') + [
          `ADD --chown=7:8 --chmod=0750 http://127.0.0.1:${port}/dl/tool.sh /opt/`,
          `ADD http://127.0.0.1:${port}/data.tgz /data/x`,
          "RUN stat -c '%a %u:%g %F %n' /opt/tool.sh /data/x && /opt/tool.sh",
        ].join('\n') + '\n',
      });
      const msgs = await build(a, { source: gitSource(git.url('add-url')) });
      expect(msgs.at(-1)).toMatchObject({ status: BuildStatus.done_success });
      const log = await logs(a, { buildId: msgs.find((m) => m.info?.buildId)!.info!.buildId });
      expect(log).toContain(`ADD http://127.0.0.1:${port}/dl/tool.sh: fetched by the worker`);
      expect(log).toContain('750 7:8 regular file /opt/tool.sh');
      expect(log).toContain('600 0:0 regular file /data/x');
      expect(log).toContain('tool-ran');
      expect(seen.sort()).toEqual(['/data.tgz', '/dl/tool.sh']);
    } finally {
      server.close();
    }
  });

  it('the classic builder gets the same rewrite: the fetched file comes from the context, --chown applies, mode 0600', async ({ expect }) => {
    allowTestServers(); // This process's own fetches (the rewrite runs in-process here) may reach the test server.
    const server = createHttpServer((req, res) => res.writeHead(req.url === '/tool.sh' ? 200 : 404).end('echo classic-tool-ran\n'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-classic-add-'));
    const tag = `imgbuilder-test-classic-add:${Math.random().toString(36).slice(2)}`;
    const engine = new DockerEngine(createDocker(stack.env.DOCKER_HOST), 'test');
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/tool.sh`;
      writeFileSync(join(dir, 'Dockerfile'), `FROM ${BASE_IMAGE}\nADD --chown=7:8 ${url} /opt/\nRUN stat -c '%a %u:%g %n' /opt/tool.sh && sh /opt/tool.sh\n`);
      mkdirSync(join(dir, 'add'));
      const given = await prepareContext(dir, 'Dockerfile', '', { maxBytes: 1 << 20, maxFiles: 10 });
      const df = await rewriteDockerfile(given.dockerfileText, {
        frontends: ['docker/dockerfile'],
        checkRegistry: checkImageRegistry,
        baseTriggers: async () => [],
        fetch: (u, file, max) => fetchAddSource(u, file, max, AbortSignal.timeout(10_000)),
        cacheNamespace: 'test',
        dir: join(dir, 'add'),
        maxBytes: 1 << 20,
        log: () => undefined,
      });
      const ctx = given.withGenerated(df.text, df.files);
      let out = '';
      await new ClassicBuilder(engine).build(ctx.tar(), { tag, dockerfile: ctx.dockerfile, registryconfig: {}, signal: AbortSignal.timeout(60_000) }, (t) => (out += t));
      expect(out).toContain('600 7:8 /opt/tool.sh');
      expect(out).toContain('classic-tool-ran');
    } finally {
      server.close();
      await engine.docker.getImage(tag).remove().catch(() => undefined);
    }
  });

  it('two callers using the same cache-mount id: the second sees nothing of the first, the first sees its own', async ({ expect }) => {
    const id = `shared-${Math.random().toString(36).slice(2)}`;
    const mount = `--mount=type=cache,id=${id},target=/c`;
    git.commit('cache-write', { Dockerfile: dockerfile(`${mount} sh -c 'echo secret-of-alice > /c/secret'`) });
    const probe = `${mount} sh -c 'if [ -e /c/secret ]; then echo "saw $(cat /c/secret)"; exit 3; fi; echo cache-mount-empty'`;
    git.commit('cache-read-bob', { Dockerfile: dockerfile(probe) });
    git.commit('cache-read-alice', { Dockerfile: dockerfile(probe) });
    const write = await build(a, { source: gitSource(git.url('cache-write')), triggeredBy: 'alice' });
    expect(write.at(-1)).toMatchObject({ status: BuildStatus.done_success });
    const [bob, alice] = await Promise.all([
      build(a, { source: gitSource(git.url('cache-read-bob')), triggeredBy: 'bob' }),
      build(b, { source: gitSource(git.url('cache-read-alice')), triggeredBy: 'alice' }),
    ]);
    expect(bob.at(-1)).toMatchObject({ status: BuildStatus.done_success });
    // The same caller's next build still finds its cache: the mount is namespaced, not turned off.
    expect(alice.at(-1)).toMatchObject({ status: BuildStatus.done_failure, message: expect.stringContaining('exit code: 3') });
  });
});
