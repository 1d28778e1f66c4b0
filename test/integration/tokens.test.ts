import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { status, type ServiceError } from '@grpc/grpc-js';
import { BuildStatus } from '@imgbuilder/proto';
import { hashToken, newToken } from '@imgbuilder/common/access-tokens';
import { build, connectAs, listBuilds, logs, resolveBase, resolveWorkspace } from '../support/client.js';
import { GitServer } from '../../testkit/git-server.js';
import { healthCheck } from '../support/health-check.js';
import { httpGet, metricsUrl } from '../support/http.js';
import { BASE_IMAGE, dockerfile, gitSource } from '../../testkit/requests.js';
import { startStack, type Stack } from '../../testkit/stack.js';
import { CLI_BUNDLE } from '../../testkit/cli.js';
import { cancelBuild, connectControl } from '../support/control.js';
import { buildIdOf, watchBuild } from '../support/streams.js';

const execFileP = promisify(execFile);

const TOKENS = { viewer: newToken(), builder: newToken(), admin: newToken(), gitpod: newToken() };
const NAMES = { viewer: 'dash-viewer', builder: 'ci-builder', admin: 'ops-admin', gitpod: 'gitpod-server' };

let stack: Stack;
let git: GitServer;
let addr: string;

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-tokens-'));
  const file = join(dir, 'tokens.json');
  const entries = (['viewer', 'builder', 'admin'] as const).map((role) => ({ name: NAMES[role], role, sha256: hashToken(TOKENS[role]) }));
  const gitpod = { name: NAMES.gitpod, role: 'builder', sha256: hashToken(TOKENS.gitpod), installationAuth: true };
  writeFileSync(file, JSON.stringify({ tokens: [...entries, gitpod] }));
  [stack, git] = await Promise.all([startStack({ apis: 1, workers: 1, env: { IMGBUILDER_TOKENS_FILE: file } }), GitServer.start()]);
  addr = stack.apiAddrs[0];
});

afterAll(async () => {
  git?.stop();
  await stack?.stop();
});

const clientWith = (authorization?: string) => connectAs(addr, authorization);

const codeOf = (p: Promise<unknown>) => p.then(() => status.OK, (e: ServiceError) => e.code);

async function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await execFileP(process.execPath, [CLI_BUNDLE, '--server', addr, ...args], { env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, timeout: 150_000 });
    return { code: 0, ...r };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}


async function triggeredBy(buildId: string): Promise<string | null> {
  const redis = new Redis(stack.env.REDIS_URL, { maxRetriesPerRequest: 2 });
  try {
    return await redis.hget(`{${stack.env.IMGBUILDER_REDIS_NAMESPACE}}:build:${buildId}`, 'triggeredBy');
  } finally {
    redis.disconnect();
  }
}

describe('access tokens on the gRPC API', () => {
  it('refuses every rpc without a valid token (UNAUTHENTICATED) and keeps health open', async () => {
    for (const auth of [undefined, 'Bearer imgb_not-a-real-token', `Basic ${TOKENS.admin}`, TOKENS.admin]) {
      const c = clientWith(auth);
      const codes = await Promise.all([
        codeOf(listBuilds(c)),
        codeOf(resolveBase(c, { ref: BASE_IMAGE })),
        codeOf(resolveWorkspace(c, { source: { from: { $case: 'ref', ref: { ref: BASE_IMAGE } } } })),
        codeOf(build(c, { source: { from: { $case: 'ref', ref: { ref: BASE_IMAGE } } } }, 20_000)),
        codeOf(logs(c, { buildId: 'x' }, 20_000)),
      ]);
      expect(codes, String(auth)).toEqual(Array(5).fill(status.UNAUTHENTICATED));
      c.close();
    }
    const e = await listBuilds(clientWith()).catch((err: ServiceError) => err);
    expect((e as ServiceError).details).toMatch(/authorization: Bearer <token>.*--token or IMGBUILDER_TOKEN/);
    expect(await healthCheck(addr, 'builder.ImageBuilder')).toBe(1);
  });

  it('a viewer lists builds and reads logs, and gets PERMISSION_DENIED for Build, Resolve* and upload', async () => {
    const c = clientWith(`Bearer ${TOKENS.viewer}`);
    expect((await listBuilds(c)).builds).toBeDefined();
    expect(await codeOf(logs(c, { buildId: '00000000-0000-4000-8000-000000000000' }, 20_000))).toBe(status.NOT_FOUND);
    const denied = await build(c, { source: { from: { $case: 'ref', ref: { ref: BASE_IMAGE } } } }, 20_000).catch((err: ServiceError) => err);
    expect((denied as ServiceError).code).toBe(status.PERMISSION_DENIED);
    expect((denied as ServiceError).details).toBe(`token "${NAMES.viewer}" has role viewer; Build needs role builder or above`);
    expect(await codeOf(resolveBase(c, { ref: BASE_IMAGE }))).toBe(status.PERMISSION_DENIED);
    expect(await codeOf(resolveWorkspace(c, { source: { from: { $case: 'ref', ref: { ref: BASE_IMAGE } } } }))).toBe(status.PERMISSION_DENIED);
    c.close();

    const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-tokens-ctx-'));
    writeFileSync(join(dir, 'Dockerfile'), dockerfile('echo from-viewer'));
    const r = await cli(['build', dir], { IMGBUILDER_TOKEN: TOKENS.viewer });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/PERMISSION_DENIED: token "dash-viewer" has role viewer; Upload needs role builder/);
    // Refused calls count like any other call, by their code.
    const metrics = (await httpGet(`${await metricsUrl(stack.apis[0])}/metrics`)).body;
    expect(metrics).toMatch(/imgbuilder_grpc_calls_total\{method="Build",code="PERMISSION_DENIED"\} [1-9]/);
    expect(metrics).toMatch(/imgbuilder_grpc_calls_total\{method="ListBuilds",code="UNAUTHENTICATED"\} [1-9]/);
  });

  it('a builder token builds through the CLI (upload included); triggered_by becomes the token name', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-tokens-ctx-'));
    writeFileSync(join(dir, 'Dockerfile'), dockerfile('echo from-builder'));
    const r = await cli(['build', dir, '--json', '--token', TOKENS.builder]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { event: string; build_id?: string; status?: string });
    const buildId = events.find((e) => e.event === 'status' && e.build_id)?.build_id;
    expect(events[events.length - 1]).toMatchObject({ event: 'done', status: 'done_success' });
    expect(await triggeredBy(buildId!)).toBe(NAMES.builder);

    const ls = await cli(['ls'], { IMGBUILDER_TOKEN: TOKENS.builder });
    expect(ls.code, ls.stderr).toBe(0);
    const anon = await cli(['ls']);
    expect(anon.code).toBe(2);
    expect(anon.stderr).toMatch(/UNAUTHENTICATED/);
  });

  it("an admin builds; the caller is the token's name plus the request's triggered_by; no token reaches the API's log", async () => {
    git.commit('admin', { Dockerfile: dockerfile('echo from-admin') });
    const c = clientWith(`Bearer ${TOKENS.admin}`);
    const res = await build(c, { source: gitSource(git.url('admin')), triggeredBy: 'gitpod-user-42' }, 150_000);
    expect(res[res.length - 1].status, res[res.length - 1].message).toBe(BuildStatus.done_success);
    expect(await triggeredBy(res[0].info!.buildId)).toBe(`${NAMES.admin}/gitpod-user-42`);
    // The job carries the token's name too: with triggered_by it keys the caller's cache mounts.
    expect(await logs(c, { buildId: res[0].info!.buildId })).toContain(`(triggered by ${NAMES.admin}/gitpod-user-42, token ${NAMES.admin})`);
    // A builder naming another token's caller as triggered_by is still attributed to its own token.
    const b = clientWith(`Bearer ${TOKENS.builder}`);
    const again = await build(b, { source: gitSource(git.url('admin')), triggeredBy: `${NAMES.admin}/gitpod-user-42`, forceRebuild: true }, 150_000);
    expect(await triggeredBy(again[0].info!.buildId)).toBe(`${NAMES.builder}/${NAMES.admin}/gitpod-user-42`);
    const bad = await build(b, { source: gitSource(git.url('admin')), triggeredBy: 'x\ny' }, 20_000).catch((err: ServiceError) => err);
    expect((bad as ServiceError).code).toBe(status.INVALID_ARGUMENT);
    b.close();
    c.close();
    const apiLog = stack.apis[0].lines.join('\n');
    for (const t of Object.values(TOKENS)) {
      expect(apiLog).not.toContain(t);
      expect(apiLog).not.toContain(hashToken(t));
    }
  });

  it('a builder cancels the builds it acts for (the one caller identity), not others\'; admin cancels any; a viewer none', async () => {
    const start = async (token: string, repo: string, triggeredBy = '') => {
      git.commit(repo, { Dockerfile: dockerfile('sleep 600') });
      const w = watchBuild(clientWith(`Bearer ${token}`), { source: gitSource(git.url(repo)), triggeredBy });
      await w.until((m) => Boolean(buildIdOf(m)), `${repo}'s build id`);
      return { w, id: buildIdOf(w.messages)! };
    };
    const [mine, mine2, admins, user1s] = await Promise.all([
      start(TOKENS.builder, 'cancel-b1'),
      start(TOKENS.builder, 'cancel-b2'),
      start(TOKENS.admin, 'cancel-a1', NAMES.builder),
      start(TOKENS.builder, 'cancel-u1', 'user-1'),
    ]);
    const clients = { viewer: connectControl(addr, `Bearer ${TOKENS.viewer}`), builder: connectControl(addr, `Bearer ${TOKENS.builder}`), admin: connectControl(addr, `Bearer ${TOKENS.admin}`), none: connectControl(addr) };
    const control = (role: keyof typeof clients) => clients[role];
    const refusal = (p: Promise<unknown>) => p.then(() => undefined, (e: ServiceError) => ({ code: e.code, details: e.details }));

    expect(await refusal(cancelBuild(control('viewer'), { buildId: mine.id }))).toEqual({ code: status.PERMISSION_DENIED, details: `token "${NAMES.viewer}" has role viewer; CancelBuild needs role builder or above` });
    expect(await refusal(cancelBuild(control('none'), { buildId: mine.id }))).toMatchObject({ code: status.UNAUTHENTICATED });
    // triggered_by names the builder, but the admin's token queued it (attributed to "<admin>/<builder>"): not the
    // builder's to cancel, with or without requested_by.
    expect(await refusal(cancelBuild(control('builder'), { buildId: admins.id, requestedBy: 'spoof' }))).toEqual({
      code: status.PERMISSION_DENIED,
      details: `caller "${NAMES.builder}/spoof" (token "${NAMES.builder}", role builder) may cancel only the builds it triggered; build ${admins.id} is not one of them (role admin may cancel any)`,
    });
    expect(await refusal(cancelBuild(control('builder'), { buildId: admins.id }))).toMatchObject({ code: status.PERMISSION_DENIED });
    // requested_by names who asks as triggered_by does: one of the token's callers cancels its own build, not another's.
    expect(await refusal(cancelBuild(control('builder'), { buildId: user1s.id, requestedBy: 'user-2' }))).toMatchObject({ code: status.PERMISSION_DENIED });
    expect(await cancelBuild(control('builder'), { buildId: user1s.id, requestedBy: 'user-1' })).toMatchObject({ cancelledBy: `${NAMES.builder}/user-1` });
    const r = await cli(['cancel', mine.id], { IMGBUILDER_TOKEN: TOKENS.builder });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(`build ${mine.id} cancelled by ${NAMES.builder}`);
    expect(await cancelBuild(control('admin'), { buildId: mine2.id, requestedBy: 'on-call' })).toMatchObject({ cancelledBy: `${NAMES.admin}/on-call` });
    expect(await cancelBuild(control('admin'), { buildId: admins.id })).toMatchObject({ cancelledBy: NAMES.admin });
    const ends = await Promise.all([mine, mine2, admins, user1s].map((x) => x.w.ended));
    expect(ends.map((e) => e.messages.at(-1)?.message)).toEqual([
      `build cancelled by ${NAMES.builder}`,
      `build cancelled by ${NAMES.admin}/on-call`,
      `build cancelled by ${NAMES.admin}`,
      `build cancelled by ${NAMES.builder}/user-1`,
    ]);
    for (const c of Object.values(clients)) c.close();
  });

  it('only tokens with "installationAuth": true, and admins, may ask for the installation\'s registry credentials', async () => {
    const allowAll = { additional: {}, mode: { $case: 'total' as const, total: { allowAll: true } } };
    const ask = (token: string, auth: object) => {
      const c = clientWith(`Bearer ${token}`);
      return resolveBase(c, { ref: BASE_IMAGE, auth }).finally(() => c.close());
    };
    const denied = await ask(TOKENS.builder, allowAll).catch((err: ServiceError) => err);
    expect((denied as ServiceError).code).toBe(status.PERMISSION_DENIED);
    expect((denied as ServiceError).details).toMatch(/token "ci-builder" may not use the installation's registry credentials \(total.allow_all\): give its entry in IMGBUILDER_TOKENS_FILE "installationAuth": true/);
    const workspace = { additional: {}, mode: { $case: 'selective' as const, selective: { allowBaserep: false, allowWorkspacerep: true, anyOf: [] } } };
    expect(await codeOf(ask(TOKENS.builder, workspace))).toBe(status.PERMISSION_DENIED);
    const b = clientWith(`Bearer ${TOKENS.builder}`);
    expect(await codeOf(build(b, { source: { from: { $case: 'ref', ref: { ref: BASE_IMAGE } } }, auth: allowAll }, 20_000))).toBe(status.PERMISSION_DENIED);
    b.close();
    // Without them, and for the tokens that may, nothing changes.
    expect(await codeOf(ask(TOKENS.builder, { additional: {} }))).toBe(status.OK);
    expect(await codeOf(ask(TOKENS.gitpod, allowAll))).toBe(status.OK);
    expect(await codeOf(ask(TOKENS.admin, workspace))).toBe(status.OK);
  });

  it('`imgbuilder cache ls|prune` need role admin; an admin lists the cache repository and prunes by age', async () => {
    const denied = await cli(['cache', 'ls'], { IMGBUILDER_TOKEN: TOKENS.builder });
    expect(denied.code).toBe(2);
    expect(denied.stderr).toMatch(/PERMISSION_DENIED: token "ci-builder" has role builder; ListCacheRefs needs role admin/);
    expect((await cli(['cache', 'prune'], { IMGBUILDER_TOKEN: TOKENS.builder })).stderr).toMatch(/PruneCache needs role admin/);
    const ls = await cli(['cache', 'ls', '--json'], { IMGBUILDER_TOKEN: TOKENS.admin });
    expect(ls.code, ls.stderr).toBe(0);
    expect(ls.stderr).toMatch(new RegExp(`^\\d+ cache refs in ${stack.env.IMGBUILDER_BASE_REPOSITORY}/cache$`, 'm'));
    for (const line of ls.stdout.split('\n').filter(Boolean)) expect(JSON.parse(line)).toMatchObject({ ref: expect.stringMatching(/\/base\/cache:cache-[0-9a-f]{40}$/), size: expect.any(Number), last_used: expect.any(String) });
    const prune = await cli(['cache', 'prune', '--older-than', '3650d'], { IMGBUILDER_TOKEN: TOKENS.admin });
    expect(prune.code, prune.stderr).toBe(0);
    expect(prune.stderr).toMatch(/^0 cache refs unused for over 3650d deleted/m);
    const bad = await cli(['cache', 'prune', '--older-than', 'soon'], { IMGBUILDER_TOKEN: TOKENS.admin });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--older-than "soon" is not an age/);
  });

  it('`imgbuilder token` prints a new token on stdout and its tokens-file entry on stderr', async () => {
    const r = await cli(['token', 'ci-2', '--role', 'viewer']);
    expect(r.code, r.stderr).toBe(0);
    const token = r.stdout.trim();
    expect(token).toMatch(/^imgb_[A-Za-z0-9_-]{43}$/);
    const entry = JSON.parse(r.stderr.trim().split('\n').pop()!) as Record<string, string>;
    expect(entry).toEqual({ name: 'ci-2', role: 'viewer', sha256: hashToken(token) });
    const bad = await cli(['token', 'ci-3', '--role', 'root']);
    expect(bad.code).toBe(2);
  });

  it('an unusable tokens file stops the API at start with a message naming the entry', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-tokens-bad-'));
    const file = join(dir, 'tokens.json');
    writeFileSync(file, JSON.stringify({ tokens: [{ name: 'ci', role: 'root', sha256: TOKENS.admin }] }));
    const err = await stack.startApi({ IMGBUILDER_TOKENS_FILE: file }).then(() => undefined, (e: Error) => e);
    expect(err?.message).toMatch(/exited \(1\)/);
    expect(err?.message).toMatch(/tokens\.0\.role/);
    expect(err?.message).toMatch(/tokens\.0\.sha256: the lowercase hex SHA-256/);
    expect(err?.message).not.toContain(TOKENS.admin);
  });
});
