import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BuildStatus, CloneTargetMode, type ImageBuilderClient } from '@imgbuilder/proto';
import { build, connect, logs } from '../support/client.js';
import { GitServer } from '../../testkit/git-server.js';
import { BASE_IMAGE, gitSource } from '../../testkit/requests.js';
import { ROOT, startStack, type Stack } from '../../testkit/stack.js';
import { CLI_BUNDLE } from '../../testkit/cli.js';
import { buildIdOf } from '../support/streams.js';
import { PrivateRegistry } from '../support/private-registry.js';
import { cacheRecords, forgetBuilds } from '../../testkit/engine-cache.js';

let stack: Stack;
let git: GitServer;
let client: ImageBuilderClient;

beforeAll(async () => {
  [stack, git] = await Promise.all([startStack({ apis: 1, workers: 1, env: { IMGBUILDER_BUILDER: 'buildkit' } }), GitServer.start()]);
  client = connect(stack.apiAddrs[0]);
});

afterAll(async () => {
  client?.close();
  git?.stop();
  await stack?.stop();
});

/** The engine as another worker's would be: none of `marker`'s build cache, none of this stack's images. */
async function forget(marker: string): Promise<void> {
  expect(await cacheRecords(stack.env.DOCKER_HOST, marker)).toBeGreaterThan(0);
  await forgetBuilds(stack.env.DOCKER_HOST, marker, [stack.env.IMGBUILDER_BASE_REPOSITORY, stack.env.IMGBUILDER_WORKSPACE_REPOSITORY]);
}

describe('layer cache shared through the registry (BuildKit)', () => {
  it('a rebuild of the same git remote and Dockerfile on an engine that forgot it imports the cache: the expensive step is CACHED', async () => {
    const nonce = Math.random().toString(36).slice(2);
    const expensive = `RUN echo expensive-${nonce} && sleep 3`;
    git.commit('cached', { Dockerfile: `FROM ${BASE_IMAGE}\n${expensive}\nRUN echo last-${nonce}-one\n` });
    const first = await build(client, { source: gitSource(git.url('cached')) });
    expect(first.at(-1)?.status).toBe(BuildStatus.done_success);
    const firstLog = await logs(client, { buildId: buildIdOf(first)! });
    expect(firstLog).toMatch(/^\[imgbuilder\] build cache: none yet for this source \(.+:cache-[0-9a-f]{40}\) or this Dockerfile's content; building without it$/m);
    expect(firstLog).toMatch(/^\[imgbuilder\] build cache: pushed .+:cache-[0-9a-f]{40}$/m);
    expect(firstLog).toMatch(new RegExp(`^#\\d+ \\d+\\.\\d{3} expensive-${nonce}$`, 'm'));

    await forget(nonce);
    // The same branch again at once: the stack reuses no ls-remote answer (IMGBUILDER_LS_REMOTE_CACHE=0), so the
    // new commit is built, whatever the engine's speed.
    git.commit('cached', { Dockerfile: `FROM ${BASE_IMAGE}\n${expensive}\nRUN echo last-${nonce}-two\n` });
    const second = await build(client, { source: gitSource(git.url('cached')) });
    expect(second.at(-1)?.status).toBe(BuildStatus.done_success);
    const log = await logs(client, { buildId: buildIdOf(second)! });
    expect(log).toMatch(/^\[imgbuilder\] build cache: importing .+:cache-[0-9a-f]{40} \(this source\)$/m);
    // The expensive step did not run again (no output), the changed one did.
    const step = new RegExp(`^#(\\d+) \\[2/3\\] ${expensive.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm').exec(log);
    expect(step, log).not.toBeNull();
    expect(log).toContain(`#${step![1]} CACHED`);
    expect(log).not.toMatch(new RegExp(`^#\\d+ \\d+\\.\\d{3} expensive-${nonce}$`, 'm'));
    expect(log).toMatch(new RegExp(`^#\\d+ \\d+\\.\\d{3} last-${nonce}-two$`, 'm'));
  });

  it('a fork (another repository, the same Dockerfile) on an engine that forgot the original imports its content-keyed ref: the heavy step is CACHED', async () => {
    const nonce = Math.random().toString(36).slice(2);
    const heavy = `RUN echo fork-heavy-${nonce} && sleep 3`;
    const dockerfile = `FROM ${BASE_IMAGE}\n${heavy}\nRUN echo fork-last-${nonce}\n`;
    git.commit(`origin-${nonce}`, { Dockerfile: dockerfile });
    const first = await build(client, { source: gitSource(git.url(`origin-${nonce}`)) });
    expect(first.at(-1)?.status).toBe(BuildStatus.done_success);
    await forget(nonce);
    git.commit(`fork-${nonce}`, { Dockerfile: dockerfile, 'README.md': 'a fork\n' });
    const fork = await build(client, { source: gitSource(git.url(`fork-${nonce}`)) });
    expect(fork.at(-1)?.status).toBe(BuildStatus.done_success);
    const log = await logs(client, { buildId: buildIdOf(fork)! });
    expect(log).toMatch(/^\[imgbuilder\] build cache: importing .+:cache-[0-9a-f]{40} \(final stage of this Dockerfile's content\)$/m);
    expect(log).not.toMatch(/build cache: importing .+ \(this source\)/);
    expectCached(log, `[2/3] ${heavy}`);
    expect(log).not.toMatch(new RegExp(`^#\\d+ \\d+\\.\\d{3} fork-heavy-${nonce}$`, 'm'));
  });

  it('force_rebuild opts out: no cache ref imported, no step reused, even on the engine that just ran them', async () => {
    const nonce = Math.random().toString(36).slice(2);
    const source = gitSource(git.url('forced'), { mode: CloneTargetMode.REMOTE_COMMIT, target: git.commit('forced', { Dockerfile: `FROM ${BASE_IMAGE}\nRUN echo forced-${nonce}\n` }) });
    expect((await build(client, { source })).at(-1)?.status).toBe(BuildStatus.done_success);
    const forced = await build(client, { source, forceRebuild: true });
    expect(forced.at(-1)?.status).toBe(BuildStatus.done_success);
    const log = await logs(client, { buildId: buildIdOf(forced)! });
    expect(log).toMatch(/^\[imgbuilder\] build cache: none imported \(force_rebuild\): every step runs again; the result is kept as cache$/m);
    expect(log).not.toContain('build cache: importing');
    expect(log).toMatch(new RegExp(`^#\\d+ \\d+\\.\\d{3} forced-${nonce}$`, 'm'));
  });

  it('a two-stage build whose builder stage changed a later step, on an engine that forgot it, reuses the unchanged heavy step through the stage\'s own ref', async () => {
    const nonce = Math.random().toString(36).slice(2);
    const heavy = `RUN echo stage-heavy-${nonce} && sleep 3`;
    const df = (v: string) => [`FROM ${BASE_IMAGE} AS builder`, heavy, `RUN echo stage-later-${nonce}-${v} > /out`, `FROM ${BASE_IMAGE}`, 'COPY --from=builder /out /out', ''].join('\n');
    const pinned = (commit: string) => gitSource(git.url('two-stage'), { mode: CloneTargetMode.REMOTE_COMMIT, target: commit });
    const first = await build(client, { source: pinned(git.commit('two-stage', { Dockerfile: df('one') })) });
    expect(first.at(-1)?.status).toBe(BuildStatus.done_success);
    const firstLog = await logs(client, { buildId: buildIdOf(first)! });
    expect(firstLog).toMatch(/^\[imgbuilder\] build cache: pushed stage builder as .+:cache-[0-9a-f]{40}, .+:cache-[0-9a-f]{40}$/m);
    await forget(nonce);
    const second = await build(client, { source: pinned(git.commit('two-stage', { Dockerfile: df('two') })) });
    expect(second.at(-1)?.status).toBe(BuildStatus.done_success);
    const log = await logs(client, { buildId: buildIdOf(second)! });
    expect(log).toMatch(/^\[imgbuilder\] build cache: importing .+:cache-[0-9a-f]{40} \(stage builder of this source\)$/m);
    expectCached(log, `[builder 2/3] ${heavy}`);
    expect(log).not.toMatch(new RegExp(`^#\\d+ \\d+\\.\\d{3} stage-heavy-${nonce}$`, 'm'));
    expect(log).toMatch(new RegExp(`stage-later-${nonce}-two`));
    // The refs that build left carry the step it took from the import: a third engine still finds it.
    await forget(nonce);
    const third = await build(client, { source: pinned(git.commit('two-stage', { Dockerfile: df('three') })) });
    expect(third.at(-1)?.status).toBe(BuildStatus.done_success);
    const thirdLog = await logs(client, { buildId: buildIdOf(third)! });
    expectCached(thirdLog, `[builder 2/3] ${heavy}`);
    expect(thirdLog).not.toMatch(new RegExp(`^#\\d+ \\d+\\.\\d{3} stage-heavy-${nonce}$`, 'm'));
  });
});

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The step `step` (as BuildKit names it: `[stage n/m] RUN …`) was started and ended CACHED. */
function expectCached(log: string, step: string): void {
  const started = new RegExp(`^#(\\d+) ${escape(step)}$`, 'm').exec(log);
  expect(started, log).not.toBeNull();
  expect(log).toMatch(new RegExp(`^#${started![1]} CACHED$`, 'm'));
}

/** `imgbuilder build DIR` with the real CLI; resolves with its stderr (the build log) once it exits 0. */
function cliBuild(dir: string): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [CLI_BUNDLE, 'build', dir], { cwd: ROOT, env: { PATH: process.env.PATH, HOME: process.env.HOME, IMGBUILDER_SERVER: stack.apiAddrs[0] }, timeout: 120_000 }, (err, _out, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stderr),
    ),
  );
}

describe('layer cache of CLI uploads', () => {
  it('a changed upload of the same directory name by the same caller imports the previous upload\'s cache', async () => {
    const nonce = Math.random().toString(36).slice(2);
    const dir = join(mkdtempSync(join(tmpdir(), 'imgbuilder-cache-cli-')), `app-${nonce}`);
    mkdirSync(dir);
    const write = (v: string) => writeFileSync(join(dir, 'Dockerfile'), `FROM ${BASE_IMAGE}\nRUN echo cli-expensive-${nonce}\nRUN echo cli-last-${v}\n`);
    write('one');
    expect(await cliBuild(dir)).toMatch(/build cache: none yet for this source/);
    write('two');
    const log = await cliBuild(dir);
    expect(log).toMatch(/build cache: importing \S+:cache-[0-9a-f]{40}/);
    // Another directory name is another source, even with the same content.
    const other = join(dirname(dir), `other-${nonce}`);
    mkdirSync(other);
    writeFileSync(join(other, 'Dockerfile'), `FROM ${BASE_IMAGE}\nRUN echo cli-expensive-${nonce}\nRUN echo cli-last-three\n`);
    expect(await cliBuild(other)).toMatch(/build cache: none yet for this source/);
  });
});

describe('a cache repository the build cannot read (htpasswd registry)', () => {
  let registry: PrivateRegistry;
  let other: Stack;
  let api: ImageBuilderClient;
  beforeAll(async () => {
    registry = await PrivateRegistry.start('cacheuser', `cachepw-${Math.random().toString(36).slice(2)}`);
    const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-cache-auth-'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ auths: { [registry.host]: { auth: registry.additional } } }));
    other = await startStack({ apis: 1, workers: 1, env: { IMGBUILDER_BUILDER: 'buildkit', IMGBUILDER_CACHE_REPOSITORY: `${registry.host}/cache`, IMGBUILDER_REGISTRY_AUTH_FILE: join(dir, 'config.json') } });
    api = connect(other.apiAddrs[0]);
  });
  afterAll(async () => {
    api?.close();
    await other?.stop();
    registry?.stop();
  });

  it('never fails a build: one line says the cache cannot be read; the cache ref is pushed with the installation credentials, not the caller\'s', async () => {
    // The caller's own credentials for the cache registry are wrong; the installation's are right.
    const auth = { additional: { [registry.host]: Buffer.from(`${registry.user}:wrong-password`).toString('base64') } };
    const nonce = Math.random().toString(36).slice(2);
    git.commit('unreadable-cache', { Dockerfile: `FROM ${BASE_IMAGE}\nRUN echo unreadable-${nonce}\n` });
    const first = await build(api, { source: gitSource(git.url('unreadable-cache')), auth });
    expect(first.at(-1)?.status, first.at(-1)?.message).toBe(BuildStatus.done_success);
    const log = await logs(api, { buildId: buildIdOf(first)! });
    const cacheLines = log.split('\n').filter((l) => l.includes('build cache: '));
    expect(cacheLines).toHaveLength(2);
    expect(cacheLines[0]).toMatch(new RegExp(`^\\[imgbuilder\\] build cache: ${registry.host}/cache cannot be read \\(.+\\); building without it$`));
    expect(cacheLines[1]).toMatch(new RegExp(`^\\[imgbuilder\\] build cache: pushed ${registry.host}/cache:cache-[0-9a-f]{40}, ${registry.host}/cache:cache-[0-9a-f]{40}$`));
    const ref = / (\S+)$/.exec(cacheLines[1])![1];
    const [, repo, tag] = /^[^/]+\/(.+):([^:]+)$/.exec(ref)!;
    const head = (authz?: string) => fetch(`http://${registry.host}/v2/${repo}/manifests/${tag}`, { method: 'HEAD', headers: { Accept: 'application/vnd.docker.distribution.manifest.v2+json', ...(authz ? { Authorization: authz } : {}) } });
    expect((await head()).status).toBe(401);
    expect((await head(`Basic ${registry.additional}`)).status).toBe(200);
  });

  it('with pull credentials for the cache registry, the next build imports the cache ref (BuildKit alone could not authenticate)', async () => {
    const auth = { additional: { [registry.host]: registry.additional } };
    const nonce = Math.random().toString(36).slice(2);
    const df = (last: string) => `FROM ${BASE_IMAGE}\nRUN echo private-expensive-${nonce}\nRUN echo private-last-${last}\n`;
    // Pinned commits: what the cache import needs is the commit, not a branch to resolve.
    const pinned = (commit: string) => gitSource(git.url('private-cache'), { mode: CloneTargetMode.REMOTE_COMMIT, target: commit });
    const first = await build(api, { source: pinned(git.commit('private-cache', { Dockerfile: df('one') })), auth });
    expect(first.at(-1)?.status, first.at(-1)?.message).toBe(BuildStatus.done_success);
    const second = await build(api, { source: pinned(git.commit('private-cache', { Dockerfile: df('two') })), auth });
    expect(second.at(-1)?.status, second.at(-1)?.message).toBe(BuildStatus.done_success);
    const log = await logs(api, { buildId: buildIdOf(second)! });
    const ref = new RegExp(`^\\[imgbuilder\\] build cache: importing (${registry.host}/cache:cache-[0-9a-f]{40}) \\(this source\\)$`, 'm').exec(log)?.[1];
    expect(ref, log).toBeDefined();
    // BuildKit's import step ends DONE: without the worker's pull it gets 401 and says "cache not imported".
    const step = new RegExp(`^#(\\d+) importing cache manifest from ${ref!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm').exec(log);
    expect(step, log).not.toBeNull();
    expect(log).toMatch(new RegExp(`^#${step![1]} DONE `, 'm'));
    expect(log).not.toContain('cache not imported');
  });
});
