import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status, type ServiceError } from '@grpc/grpc-js';
import * as tarFs from 'tar-fs';
import {
  BuildRequest,
  BuildStatus,
  CloneTargetMode,
  GitAuthMethod,
  GitInitializer,
  type BuildResponse,
  type ImageBuilderClient,
  type WorkspaceInitializer,
} from '@imgbuilder/proto';
import { ObjectStore, objectStoreOptions } from '@imgbuilder/common/object-store';
import { loadEnv } from '@imgbuilder/common/config';
import { workspaceRef } from '@imgbuilder/common/refs';
import { build, collect, connect, logs, refusedByApi, resolveWorkspace } from '../support/client.js';
import { GitServer } from '../../testkit/git-server.js';
import { dumpNamespace } from '../support/redis-dump.js';
import { BASE_IMAGE, dockerfile, downloadInit, emptyInit, fileSource, gitInit, rand, sha256, snapshotInit } from '../../testkit/requests.js';
import { tarOf } from '../support/tar.js';
import { lastOf } from '../support/streams.js';
import { SourceServer } from '../support/source-server.js';
import { startStack, type Stack } from '../../testkit/stack.js';

const USER = 'gituser';
const PASSWORD = `pw-${randomBytes(8).toString('hex')}`;

let stack: Stack;
let git: GitServer;
let src: SourceServer;
let api: ImageBuilderClient;
let objects: ObjectStore;

beforeAll(async () => {
  [stack, git] = await Promise.all([startStack({ apis: 1, workers: 1 }), GitServer.start()]);
  src = await SourceServer.start(git.root, USER, PASSWORD);
  api = connect(stack.apiAddrs[0]);
  objects = new ObjectStore(objectStoreOptions(loadEnv(stack.env)));
});

afterAll(async () => {
  api?.close();
  src?.stop();
  git?.stop();
  await stack?.stop();
});




async function buildLog(msgs: BuildResponse[]): Promise<string> {
  return logs(api, { buildId: msgs[0].info!.buildId });
}

/** Runs a build; `during` runs once the build is queued or running (its job is in Redis). */
async function buildWith(req: Parameters<typeof BuildRequest.fromPartial>[0], during: () => Promise<void>): Promise<BuildResponse[]> {
  const stream = api.build(BuildRequest.fromPartial(req));
  const all = collect(stream);
  await new Promise<void>((resolve) => stream.once('data', () => resolve()));
  await during();
  return all;
}



async function tarDir(dir: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of tarFs.pack(dir) as unknown as Readable) chunks.push(c as Buffer);
  return gzipSync(Buffer.concat(chunks));
}

describe('git initializer', () => {
  it('BASIC_AUTH over HTTP: clones into checkout_location, sends custom_config, records upstream; the password is nowhere', async () => {
    const header = `hdr-${rand()}`;
    // Context `.` holds the checkout at src/, .git included: the build itself proves what the clone wrote to disk.
    git.commit('private', {
      Dockerfile: `${dockerfile()}COPY src/.git /checkout-git\nRUN cat /checkout-git/config\nRUN ! grep -rq "${PASSWORD}" /checkout-git && echo no-password-in-checkout\nRUN sleep 2\n`,
    });
    const source = fileSource(
      gitInit({
        remoteUri: src.gitUrl('private'),
        upstreamRemoteUri: 'https://github.com/upstream-owner/private.git',
        targetMode: CloneTargetMode.REMOTE_HEAD,
        checkoutLocation: 'src',
        config: { authentication: GitAuthMethod.BASIC_AUTH, authUser: USER, authPassword: PASSWORD, customConfig: { 'http.extraHeader': `X-Imgbuilder-Test: ${header}` } },
      }),
      { dockerfilePath: 'src/Dockerfile', contextPath: '.' },
    );
    const dumps: string[] = [];
    const ns = stack.env.IMGBUILDER_REDIS_NAMESPACE;
    const msgs = await buildWith({ source, triggeredBy: 'sources-test' }, async () => {
      dumps.push(await dumpNamespace(stack.env.REDIS_URL, ns));
    });
    expect(lastOf(msgs).status, lastOf(msgs).message).toBe(BuildStatus.done_success);
    dumps.push(await dumpNamespace(stack.env.REDIS_URL, ns));

    const log = await buildLog(msgs);
    expect(log).toContain('no-password-in-checkout');
    expect(log).toContain('[remote "upstream"]');
    expect(log).toContain('url = https://github.com/upstream-owner/private.git');
    expect(log).toContain(`url = ${src.gitUrl('private')}`);
    expect(log).not.toContain(`${USER}@`);

    // custom_config reached git: every request for the repository carried the extra header.
    const gitRequests = src.requests.filter((r) => r.path.startsWith('/git/private/'));
    expect(gitRequests.some((r) => r.method === 'POST')).toBe(true);
    for (const r of gitRequests) expect(r.headers['x-imgbuilder-test']).toBe(header);

    // The job was in Redis while the build ran (sealed); nothing of the secrets is readable there.
    expect(dumps[0]).toContain(':builds:');
    for (const text of [log, ...dumps, ...stack.apis[0].lines, ...stack.workers[0].lines]) {
      expect(text).not.toContain(PASSWORD);
      expect(text).not.toContain(header);
    }
  });

  it('BASIC_AUTH_OTS: fetches user:password once from auth_ots and clones with it', async () => {
    const otsPath = `/ots/${rand()}${rand()}`;
    const ots = src.oneTimeSecret(otsPath, `${USER}:${PASSWORD}`);
    git.commit('private-ots', { Dockerfile: dockerfile('echo ots-clone-ok') });
    const source = fileSource(gitInit({ remoteUri: src.gitUrl('private-ots'), config: { authentication: GitAuthMethod.BASIC_AUTH_OTS, authOts: ots } }));
    const msgs = await build(api, { source });
    expect(lastOf(msgs).status, lastOf(msgs).message).toBe(BuildStatus.done_success);
    expect(src.otsHits(otsPath)).toBe(1);
    const log = await buildLog(msgs);
    expect(log).toContain('ots-clone-ok');
    const dump = await dumpNamespace(stack.env.REDIS_URL, stack.env.IMGBUILDER_REDIS_NAMESPACE);
    for (const text of [log, dump, ...stack.workers[0].lines]) {
      expect(text).not.toContain(PASSWORD);
      expect(text).not.toContain(otsPath);
    }
  });

  it('a wrong password: UNAUTHENTICATED when the API resolves the branch, done_failure when the worker clones; never the password', async () => {
    const wrong = `wrong-${rand()}${rand()}`;
    const commit = git.commit('private-wrong', { Dockerfile: dockerfile('echo never') });
    const auth = { authentication: GitAuthMethod.BASIC_AUTH, authUser: USER, authPassword: wrong };
    const err = (await build(api, { source: fileSource(gitInit({ remoteUri: src.gitUrl('private-wrong'), config: auth })) }).catch((e: ServiceError) => e)) as ServiceError;
    expect(err.code).toBe(status.UNAUTHENTICATED);
    expect(err.details).not.toContain(wrong);

    const msgs = await build(api, { source: fileSource(gitInit({ remoteUri: src.gitUrl('private-wrong'), targetMode: CloneTargetMode.REMOTE_COMMIT, cloneTaget: commit, config: auth })) });
    expect(lastOf(msgs).status).toBe(BuildStatus.done_failure);
    expect(lastOf(msgs).message).toContain('git clone of');
    expect(lastOf(msgs).message).not.toContain(wrong);
    expect(await buildLog(msgs)).not.toContain(wrong);
  });

  it('full_clone fetches every branch with history; a default clone is shallow; LOCAL_BRANCH starts a new branch at the remote head', async () => {
    const df = `${dockerfile()}COPY repo/.git /g\nRUN if [ -e /g/shallow ]; then echo clone-is-shallow; else echo clone-is-full; fi; cat /g/HEAD; (cat /g/packed-refs 2>/dev/null; find /g/refs -type f) | sed 's/^/ref: /'\n`;
    // full_clone, checkout_location and the target mode are not part of Gitpod's hash: each build gets its own commit.
    const c1 = git.commit('history', { Dockerfile: df, v: '1' });
    const c2 = git.commit('history', { v: '2' });
    const c3 = git.commit('history', { v: '3' });
    git.commit('history', { o: 'other' }, 'other');
    const at = (cloneTaget: string, fullClone: boolean, targetMode = CloneTargetMode.REMOTE_COMMIT) =>
      fileSource(gitInit({ remoteUri: git.url('history'), targetMode, cloneTaget, checkoutLocation: 'repo', fullClone }), { dockerfilePath: 'repo/Dockerfile', contextPath: '.' });
    const [full, shallow, local] = await Promise.all([
      build(api, { source: at(c2, true) }),
      build(api, { source: at(c1, false) }),
      build(api, { source: at('brand-new-branch', false, CloneTargetMode.LOCAL_BRANCH) }),
    ]);
    for (const m of [full, shallow, local]) expect(lastOf(m).status, lastOf(m).message).toBe(BuildStatus.done_success);
    const [fullLog, shallowLog, localLog] = await Promise.all([buildLog(full), buildLog(shallow), buildLog(local)]);
    expect(fullLog).toContain('clone-is-full');
    expect(fullLog).toMatch(/ref: .*refs\/remotes\/origin\/other/);
    expect(shallowLog).toContain('clone-is-shallow');
    expect(shallowLog).not.toMatch(/refs\/remotes\/origin\/other/);
    expect(localLog).toContain('ref: refs/heads/brand-new-branch');
    expect(localLog).toContain(`checked out ${c3}`);
  });

  it('a moved branch yields a new ref: ResolveWorkspaceImage before and after a commit differ (fresh API process)', async () => {
    git.commit('moving', { 'README.md': 'main branch' });
    const before = git.commit('moving', { Dockerfile: dockerfile('echo moving-v1') }, 'moving');
    const source = fileSource(gitInit({ remoteUri: git.url('moving'), targetMode: CloneTargetMode.REMOTE_BRANCH, cloneTaget: 'moving' }));
    const first = await resolveWorkspace(api, { source });
    const after = git.commit('moving', { Dockerfile: dockerfile('echo moving-v2') }, 'moving');
    expect(after).not.toBe(before);
    // Each API process caches ls-remote answers for 5 s; a process that never asked sees the new commit at once.
    await stack.startApi();
    const fresh = connect(stack.apiAddrs[stack.apiAddrs.length - 1]);
    try {
      const second = await resolveWorkspace(fresh, { source });
      expect(second.ref).not.toBe(first.ref);
      expect(second.baseRef).not.toBe(first.baseRef);
      const msgs = await build(fresh, { source });
      expect(lastOf(msgs)).toMatchObject({ status: BuildStatus.done_success, ref: second.ref });
      const log = await logs(fresh, { buildId: msgs[0].info!.buildId });
      expect(log).toContain(`checked out ${after}`);
      expect(log).toContain('moving-v2');
    } finally {
      fresh.close();
    }
  });
});

describe('download, composite and empty initializers', () => {
  it('download places each file under target_location and checks its digest', async () => {
    const hello = `hello-from-download-${rand()}`;
    const df = `FROM ${BASE_IMAGE}\nCOPY data/hello.txt /hello.txt\nRUN cat /hello.txt\n`;
    const dfUrl = src.file(`/files/${rand()}/Dockerfile`, df);
    const helloUrl = src.file(`/files/${rand()}/hello.txt`, hello);
    const ok = await build(api, {
      source: fileSource(
        downloadInit(
          [
            { url: dfUrl, filePath: 'Dockerfile', digest: sha256(df) },
            { url: helloUrl, filePath: 'data/hello.txt', digest: sha256(hello) },
          ],
          'dl',
        ),
        { dockerfilePath: 'dl/Dockerfile' },
      ),
    });
    expect(lastOf(ok).status, lastOf(ok).message).toBe(BuildStatus.done_success);
    expect(await buildLog(ok)).toContain(hello);

    const bad = await build(api, {
      source: fileSource(
        downloadInit([
          { url: dfUrl, filePath: 'Dockerfile', digest: sha256(df) },
          { url: helloUrl, filePath: 'data/hello.txt', digest: sha256('something else') },
        ]),
      ),
    });
    expect(lastOf(bad).status).toBe(BuildStatus.done_failure);
    expect(lastOf(bad).message).toMatch(/data\/hello\.txt.*digest mismatch/);
  });

  it('a download redirected to a link-local address ends done_failure before anything is fetched from there', async () => {
    const url = src.redirect(`/r/${rand()}`, 'http://169.254.169.254/latest/meta-data/iam/security-credentials/');
    const msgs = await build(api, { source: fileSource(downloadInit([{ url, filePath: 'Dockerfile', digest: sha256('x') }])) });
    expect(lastOf(msgs).status).toBe(BuildStatus.done_failure);
    expect(lastOf(msgs).message).toMatch(/Dockerfile.*169\.254\.169\.254.*refused/);
  });

  it('composite runs its initializers into one context: a downloaded Dockerfile plus empty builds', async () => {
    const df = dockerfile('echo composite-ok');
    const url = src.file(`/files/${rand()}/Dockerfile`, df);
    const msgs = await build(api, {
      source: fileSource({ spec: { $case: 'composite', composite: { initializer: [downloadInit([{ url, filePath: 'Dockerfile', digest: sha256(df) }]), emptyInit] } } }),
    });
    expect(lastOf(msgs).status, lastOf(msgs).message).toBe(BuildStatus.done_success);
    expect(await buildLog(msgs)).toContain('composite-ok');
  });

  it('empty alone has no Dockerfile: done_failure naming the missing path', async () => {
    const msgs = await build(api, { source: fileSource(emptyInit, { dockerfilePath: 'build/Containerfile' }) });
    expect(lastOf(msgs).status).toBe(BuildStatus.done_failure);
    expect(lastOf(msgs).message).toContain('build/Containerfile');
  });
});

describe('snapshot and prebuild initializers', () => {
  it('restores a tar.gz named s3://bucket/key and a plain tar named by key in the default bucket', async () => {
    const bucket = stack.env.IMGBUILDER_S3_BUCKET;
    const gzText = `from-gzip-snapshot-${rand()}`;
    const plainText = `from-plain-snapshot-${rand()}`;
    const gzKey = `snapshots/${rand()}.tar.gz`;
    const plainKey = `snapshots/${rand()}.tar`;
    const withCopy = (text: string) => `FROM ${BASE_IMAGE}\nCOPY motd-test /etc/motd-test\nRUN cat /etc/motd-test\n# ${text}\n`;
    await objects.put(gzKey, await tarOf({ Dockerfile: withCopy(gzText), 'motd-test': gzText }, { gzip: true }), 'application/gzip');
    await objects.put(plainKey, await tarOf({ Dockerfile: withCopy(plainText), 'motd-test': plainText }), 'application/x-tar');
    const [gz, plain] = await Promise.all([build(api, { source: fileSource(snapshotInit(`s3://${bucket}/${gzKey}`)) }), build(api, { source: fileSource(snapshotInit(plainKey)) })]);
    expect(lastOf(gz).status, lastOf(gz).message).toBe(BuildStatus.done_success);
    expect(lastOf(plain).status, lastOf(plain).message).toBe(BuildStatus.done_success);
    expect(await buildLog(gz)).toContain(gzText);
    expect(await buildLog(plain)).toContain(plainText);
  });

  it('prebuild restores the snapshot, then checks out its git target keeping the prebuild output', async () => {
    const df = `FROM ${BASE_IMAGE}\nCOPY . /w\nRUN cat /w/src.txt; cat /w/prebuild-output.txt 2>/dev/null || echo no-prebuild-output\n`;
    const a = git.commit('prebuilt', { Dockerfile: df, 'src.txt': 'src-at-A' });
    const b = git.commit('prebuilt', { 'src.txt': `src-at-B-${rand()}` });
    const work = mkdtempSync(join(tmpdir(), 'imgbuilder-prebuild-'));
    execFileSync('git', ['clone', '-q', git.url('prebuilt'), join(work, 'ws')]);
    execFileSync('git', ['-C', join(work, 'ws'), 'checkout', '-q', a]);
    const output = `built-in-prebuild-${rand()}`;
    writeFileSync(join(work, 'ws', 'prebuild-output.txt'), output);
    const key = `snapshots/prebuild-${rand()}.tar.gz`;
    await objects.put(key, await tarDir(join(work, 'ws')), 'application/gzip');

    const prebuild = (snapshot: string): WorkspaceInitializer => ({
      spec: {
        $case: 'prebuild',
        prebuild: {
          prebuild: { snapshot, fromVolumeSnapshot: false },
          git: [GitInitializer.fromPartial({ remoteUri: git.url('prebuilt'), targetMode: CloneTargetMode.REMOTE_COMMIT, cloneTaget: b })],
        },
      },
    });
    const [restored, fallback] = await Promise.all([build(api, { source: fileSource(prebuild(key)) }), build(api, { source: fileSource(prebuild(`snapshots/missing-${rand()}.tar`)) })]);
    expect(lastOf(restored).status, lastOf(restored).message).toBe(BuildStatus.done_success);
    const restoredLog = await buildLog(restored);
    expect(restoredLog).toContain(`restoring snapshot ${key}`);
    expect(restoredLog).toContain(`prebuild snapshot: checked out ${b}`);
    expect(restoredLog).toContain('src-at-B');
    expect(restoredLog).toContain(output);

    expect(lastOf(fallback).status, lastOf(fallback).message).toBe(BuildStatus.done_success);
    const fallbackLog = await buildLog(fallback);
    expect(fallbackLog).toMatch(/prebuild snapshot could not be used \(snapshot .* not found\); falling back to git/);
    expect(fallbackLog).toContain(`checked out ${b}`);
    expect(fallbackLog).toContain('src-at-B');
    expect(fallbackLog).not.toContain(output);
  });
});

describe('refusals', () => {
  it('backup: INVALID_ARGUMENT saying there are no workspace backups', async () => {
    await refusedByApi(api, fileSource({ spec: { $case: 'backup', backup: { checkoutLocation: '', fromVolumeSnapshot: false } } }), /no workspace backups/);
  });

  it('.. and absolute paths in the request: INVALID_ARGUMENT', async () => {
    const g = (checkoutLocation = '') => gitInit({ remoteUri: git.url('anything'), targetMode: CloneTargetMode.REMOTE_COMMIT, cloneTaget: 'a'.repeat(40), checkoutLocation });
    await refusedByApi(api, fileSource(g(), { dockerfilePath: '../Dockerfile' }), /dockerfile_path.*outside/);
    await refusedByApi(api, fileSource(g(), { dockerfilePath: '/etc/passwd' }), /dockerfile_path.*absolute/);
    await refusedByApi(api, fileSource(g(), { contextPath: 'a/../../b' }), /context_path.*outside/);
    await refusedByApi(api, fileSource(g('../up')), /checkout_location.*outside/);
    await refusedByApi(api, fileSource(downloadInit([{ url: 'http://127.0.0.1/x', filePath: '../../x', digest: sha256('x') }])), /file_path.*outside/);
    await refusedByApi(api, fileSource(downloadInit([{ url: 'http://127.0.0.1/x', filePath: 'x', digest: sha256('x') }], '/abs')), /target_location.*absolute/);
  });

  it('a symlink in the repository pointing outside the context, or a Dockerfile reached through one: done_failure', async () => {
    git.commit('symlinks', { Dockerfile: dockerfile('echo x') });
    symlinkSync('/etc/passwd', join(git.root, 'symlinks', 'escape'));
    git.commit('symlinks', {});
    git.commit('symlinkdir', { 'README.md': 'x' });
    symlinkSync('/etc', join(git.root, 'symlinkdir', 'etc'));
    git.commit('symlinkdir', {});
    const [escape, through] = await Promise.all([
      build(api, { source: fileSource(gitInit({ remoteUri: git.url('symlinks') })) }),
      build(api, { source: fileSource(gitInit({ remoteUri: git.url('symlinkdir') }), { dockerfilePath: 'etc/hostname', contextPath: '.' }) }),
    ]);
    expect(lastOf(escape).status).toBe(BuildStatus.done_failure);
    expect(lastOf(escape).message).toMatch(/symlink escape points outside the build context/);
    expect(lastOf(through).status).toBe(BuildStatus.done_failure);
    expect(lastOf(through).message).toMatch(/dockerfile_path etc\/hostname points outside the build context through a symlink/);
  });

  it('file:// remotes, local paths and git transport helpers: INVALID_ARGUMENT', async () => {
    await refusedByApi(api, fileSource(gitInit({ remoteUri: `file://${git.root}/private` })), /file:\/\/ URLs are refused.*IMGBUILDER_ALLOW_LOCAL_SOURCES/);
    await refusedByApi(api, fileSource(gitInit({ remoteUri: `${git.root}/private` })), /local paths/);
    await refusedByApi(api, fileSource(gitInit({ remoteUri: 'ext::sh -c touch% /tmp/imgbuilder-pwned' })), /transport helpers/);
  });

  it('link-local / metadata literals in remotes, downloads and OTS URLs: INVALID_ARGUMENT from Build and ResolveWorkspaceImage', async () => {
    await refusedByApi(api, fileSource(gitInit({ remoteUri: 'http://169.254.169.254/x' })), /169\.254\.169\.254.*refused/);
    await refusedByApi(api, fileSource(gitInit({ remoteUri: 'http://[::ffff:169.254.169.254]/x' })), /link-local/);
    await refusedByApi(api, fileSource(gitInit({ remoteUri: 'git://[fd00:ec2::254]/x' })), /fd00:ec2::254/);
    await refusedByApi(api, fileSource(downloadInit([{ url: 'http://169.254.169.254/latest/meta-data', filePath: 'Dockerfile', digest: sha256('x') }])), /download url.*refused/);
    await refusedByApi(api, 
      fileSource(gitInit({ remoteUri: src.gitUrl('private'), config: { authentication: GitAuthMethod.BASIC_AUTH_OTS, authOts: 'http://169.254.169.254/ots' } })),
      /auth_ots.*refused/,
    );
  });

  it('custom_config keys that run programs or redirect the fetch, and volume snapshots: INVALID_ARGUMENT', async () => {
    await refusedByApi(api, fileSource(gitInit({ remoteUri: git.url('private'), config: { customConfig: { 'core.sshCommand': 'touch /tmp/imgbuilder-pwned' } } })), /core\.sshCommand.*not allowed/);
    await refusedByApi(api, fileSource(gitInit({ remoteUri: git.url('private'), config: { customConfig: { 'url.file:///etc/.insteadOf': 'git://' } } })), /not allowed/);
    await refusedByApi(api, fileSource(snapshotInit('some/key', true)), /volume snapshots/);
  });
});

describe('base_image_name_resolved', () => {
  it('an existing workspace image for that base answers done_success at once', async () => {
    git.commit('resolved-base', { Dockerfile: dockerfile('echo resolved-base') });
    const source = fileSource(gitInit({ remoteUri: git.url('resolved-base') }));
    const first = await build(api, { source });
    expect(lastOf(first).status, lastOf(first).message).toBe(BuildStatus.done_success);
    const again = await build(api, { source, baseImageNameResolved: lastOf(first).baseRef });
    expect(again).toHaveLength(1);
    expect(again[0]).toMatchObject({ status: BuildStatus.done_success, ref: lastOf(first).ref, baseRef: lastOf(first).baseRef });
  });

  it('otherwise builds from the resolved base by copy, not from the Dockerfile', async () => {
    // The source's Dockerfile would fail: the resolved base, not the Dockerfile, must be used.
    git.commit('resolved-copy', { Dockerfile: dockerfile('exit 3') });
    const source = fileSource(gitInit({ remoteUri: git.url('resolved-copy') }));
    const msgs = await build(api, { source, baseImageNameResolved: BASE_IMAGE });
    expect(lastOf(msgs).status, lastOf(msgs).message).toBe(BuildStatus.done_success);
    expect(lastOf(msgs).ref).toBe(workspaceRef(BASE_IMAGE, stack.env.IMGBUILDER_WORKSPACE_REPOSITORY));
    const log = await buildLog(msgs);
    expect(log).toMatch(/pulling 127\.0\.0\.1:5000\/imgbuilder\/busybox@sha256:[a-f0-9]{64}/);
    expect(log).not.toContain('Step 1/');
    expect(log).not.toMatch(/^#\d+ \[1\/\d+\] FROM /m);
    const again = await build(api, { source, baseImageNameResolved: BASE_IMAGE });
    expect(again).toHaveLength(1);
    expect(again[0]).toMatchObject({ status: BuildStatus.done_success, ref: lastOf(msgs).ref });
  });
});
