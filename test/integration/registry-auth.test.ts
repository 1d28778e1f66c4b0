import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status } from '@grpc/grpc-js';
import type Docker from 'dockerode';
import {
  type BuildRegistryAuth,
  BuildRequest,
  BuildStatus,
  ResolveBaseImageRequest,
  type BuildResponse,
  type BuildSource,
  type ImageBuilderClient,
  type ResolveBaseImageResponse,
} from '@imgbuilder/proto';
import { collect, connect, logs } from '../support/client.js';
import { GitServer } from '../../testkit/git-server.js';
import { engineWithBaseImage, PrivateRegistry } from '../support/private-registry.js';
import { dumpNamespace } from '../support/redis-dump.js';
import { BASE_IMAGE, gitSource } from '../../testkit/requests.js';
import { isTerminalStatus, lastOf, textOf, watchBuild, watchLogs } from '../support/streams.js';
import { localEnv, startStack, type Stack } from '../../testkit/stack.js';

const PASSWORD = `regpw-${randomBytes(8).toString('hex')}`;

let registry: PrivateRegistry;
let docker: Docker;
let privateImage: string;
let stack: Stack;
let git: GitServer;
let api: ImageBuilderClient;
/** Every build of this file, for the final secrets check. */
const builds: BuildResponse[][] = [];

beforeAll(async () => {
  registry = await PrivateRegistry.start('reguser', PASSWORD);
  docker = await engineWithBaseImage(localEnv().DOCKER_HOST, BASE_IMAGE);
  privateImage = await registry.push(docker, BASE_IMAGE, 'private/base', 'latest');
  // The installation's credentials hold the private registry: requests decide whether they may be used.
  const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-installation-auth-'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ auths: { [registry.host]: { auth: registry.additional } } }));
  [stack, git] = await Promise.all([startStack({ apis: 1, workers: 1, env: { IMGBUILDER_REGISTRY_AUTH_FILE: join(dir, 'config.json'), IMGBUILDER_WORKER_CONCURRENCY: '3' } }), GitServer.start()]);
  api = connect(stack.apiAddrs[0]);
});

afterAll(async () => {
  api?.close();
  git?.stop();
  await stack?.stop();
  registry?.stop();
});

type Auth = Parameters<typeof BuildRegistryAuth.fromPartial>[0];
const withAdditional = (): Auth => ({ additional: { [registry.host]: registry.additional } });
const selective = (anyOf: string[], allowBaserep = false): Auth => ({ mode: { $case: 'selective', selective: { allowBaserep, allowWorkspacerep: false, anyOf } } });
const total = (allowAll: boolean): Auth => ({ mode: { $case: 'total', total: { allowAll } } });

function resolveBase(ref: string, auth?: Auth): Promise<ResolveBaseImageResponse> {
  return new Promise((resolve, reject) =>
    api.resolveBaseImage(ResolveBaseImageRequest.fromPartial({ ref, auth }), (err, res) => (err ? reject(err) : resolve(res!))),
  );
}

async function runBuild(source: BuildSource, auth?: Auth, during?: () => Promise<void>): Promise<BuildResponse[]> {
  // The engine keeps what it pulled: drop the private name so every build has to authenticate again.
  await registry.forget(docker, privateImage);
  const stream = api.build(BuildRequest.fromPartial({ source, auth }));
  const all = collect(stream);
  if (during) {
    await new Promise<void>((resolve) => stream.once('data', () => resolve()));
    await during();
  }
  const msgs = await all;
  builds.push(msgs);
  return msgs;
}

const unauthenticated = { code: status.UNAUTHENTICATED, details: expect.stringContaining('cannot resolve image') };

/** A repository whose Dockerfile starts FROM the private image; each call is a new commit, hence a new ref. */
function privateFromSource(name: string): BuildSource {
  git.commit(name, { Dockerfile: `FROM ${privateImage}\nRUN echo built-on-private-${randomBytes(4).toString('hex')}\nRUN sleep 1\n` });
  return gitSource(git.url(name));
}

describe('ResolveBaseImage of an image in an htpasswd-protected registry', () => {
  it('is UNAUTHENTICATED "cannot resolve image" without credentials, resolves with additional ones', async () => {
    await expect(resolveBase(privateImage)).rejects.toMatchObject(unauthenticated);
    const wrong = { additional: { [registry.host]: Buffer.from('reguser:wrong-password').toString('base64') } };
    await expect(resolveBase(privateImage, wrong)).rejects.toMatchObject(unauthenticated);
    const res = await resolveBase(privateImage, withAdditional());
    expect(res.ref).toMatch(new RegExp(`^${registry.host.replace(/\./g, '\\.')}/private/base@sha256:[a-f0-9]{64}$`));
  });

  it('uses the installation credentials only when selective.any_of names the host or total.allow_all is set', async () => {
    await expect(resolveBase(privateImage, selective([registry.host]))).resolves.toMatchObject({ ref: expect.stringContaining('@sha256:') });
    await expect(resolveBase(privateImage, total(true))).resolves.toMatchObject({ ref: expect.stringContaining('@sha256:') });
    // The base repository's host (127.0.0.1:5000) is another registry: allow_baserep does not open this one.
    await expect(resolveBase(privateImage, selective([], true))).rejects.toMatchObject(unauthenticated);
    await expect(resolveBase(privateImage, selective(['127.0.0.1:5000']))).rejects.toMatchObject(unauthenticated);
    await expect(resolveBase(privateImage, total(false))).rejects.toMatchObject(unauthenticated);
  });
});

describe('Build with a private FROM image', () => {
  it('fails with a clear done_failure without credentials', async () => {
    const msgs = await runBuild(privateFromSource('from-private-denied'));
    expect(lastOf(msgs).status).toBe(BuildStatus.done_failure);
    expect(lastOf(msgs).message).toContain(`FROM ${privateImage}`);
    // Classic: "no basic auth credentials"; BuildKit: "… 401 Unauthorized".
    expect(lastOf(msgs).message).toMatch(/(no basic auth credentials|401 Unauthorized).*the registry refused access: pass credentials for its host in BuildRegistryAuth\.additional/);
  });

  it('succeeds with additional credentials (and none of them reach Redis while it runs)', async () => {
    const dumps: string[] = [];
    const msgs = await runBuild(privateFromSource('from-private-additional'), withAdditional(), async () => {
      dumps.push(await dumpNamespace(stack.env.REDIS_URL, stack.env.IMGBUILDER_REDIS_NAMESPACE));
    });
    expect(lastOf(msgs).status, lastOf(msgs).message).toBe(BuildStatus.done_success);
    expect(await logs(api, { buildId: msgs[0].info!.buildId })).toContain('built-on-private-');
    expect(dumps[0]).toContain(':builds:');
    for (const d of dumps) {
      expect(d).not.toContain(PASSWORD);
      expect(d).not.toContain(registry.additional);
    }
  });

  it('succeeds with the installation credentials when selective.any_of allows the host', async () => {
    const msgs = await runBuild(privateFromSource('from-private-installation'), selective([registry.host]));
    expect(lastOf(msgs).status, lastOf(msgs).message).toBe(BuildStatus.done_success);
  });
});

describe('a private base pulled for one build', () => {
  it('cannot be used by a concurrent build without credentials, by its tag or by its digest', async () => {
    await registry.forget(docker, privateImage);
    const digestRef = (await resolveBase(privateImage, withAdditional())).ref;
    git.commit('private-holder', { Dockerfile: `FROM ${privateImage}\nRUN echo holder-started-${randomBytes(4).toString('hex')}\nRUN sleep 6\n` });
    const holder = watchBuild(api, { source: gitSource(git.url('private-holder')), auth: withAdditional() });
    await holder.until((m) => Boolean(m[0]?.info?.buildId), 'the build id');
    const holderLog = watchLogs(api, { buildId: holder.messages[0].info!.buildId });
    await holderLog.until((m) => textOf(m).includes('holder-started-'), 'the holder\'s first step');
    holderLog.cancel();
    // While the holder runs on its pulled private base, builds without credentials name that image.
    const names = [privateImage, digestRef];
    const others = await Promise.all(
      names.map((from, i) => {
        git.commit(`private-intruder-${i}`, { Dockerfile: `FROM ${from}\nRUN echo intruder-built\n` });
        return collect(api.build(BuildRequest.fromPartial({ source: gitSource(git.url(`private-intruder-${i}`)) })));
      }),
    );
    builds.push(...others);
    // All of this while the holder still ran on its pulled image.
    expect(holder.messages.some((m) => isTerminalStatus(m.status))).toBe(false);
    // They fail at their FROM: the engine has no image by that name, and the registry wants credentials.
    others.forEach((msgs, i) => {
      expect(lastOf(msgs).status).toBe(BuildStatus.done_failure);
      expect(lastOf(msgs).message).toContain(`step "FROM ${names[i]}"`);
    });
    const { messages } = await holder.ended;
    builds.push(messages);
    expect(lastOf(messages).status, lastOf(messages).message).toBe(BuildStatus.done_success);
  });
});

describe('a ref source naming the private image', () => {
  it('is UNAUTHENTICATED without credentials and is copied to the workspace repository with additional ones', async () => {
    const source: BuildSource = { from: { $case: 'ref', ref: { ref: privateImage } } };
    await expect(runBuild(source)).rejects.toMatchObject(unauthenticated);
    const msgs = await runBuild(source, withAdditional());
    expect(lastOf(msgs).status, lastOf(msgs).message).toBe(BuildStatus.done_success);
    expect(lastOf(msgs).baseRef).toMatch(/\/private\/base@sha256:[a-f0-9]{64}$/);
    expect(lastOf(msgs).ref.startsWith(`${stack.env.IMGBUILDER_WORKSPACE_REPOSITORY}:`)).toBe(true);
    expect(await logs(api, { buildId: msgs[0].info!.buildId })).toContain(`pulling ${lastOf(msgs).baseRef}`);
  });
});

describe('secrets', () => {
  it('the registry password appears in no build log, no Redis key and no process log', async () => {
    expect(builds.length).toBeGreaterThanOrEqual(4);
    const texts = await Promise.all(builds.filter((b) => b[0]?.info?.buildId).map((b) => logs(api, { buildId: b[0].info!.buildId })));
    texts.push(await dumpNamespace(stack.env.REDIS_URL, stack.env.IMGBUILDER_REDIS_NAMESPACE));
    texts.push(...stack.apis[0].lines, ...stack.workers[0].lines);
    for (const t of texts) {
      expect(t).not.toContain(PASSWORD);
      expect(t).not.toContain(registry.additional);
    }
  });
});
