import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { credentials, makeGenericClientConstructor, status, type Client, type ClientReadableStream, type MethodDefinition, type ServiceError } from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import { BuildStatus, CloneTargetMode, type BuildResponse, type BuildSource, type ImageBuilderClient, type LogInfo } from '@imgbuilder/proto';
import { Redis } from 'ioredis';
import { LogTokens, logTokenKeys } from '../../apps/api/src/logs/log-token.js';
import { build, connect, logs, resolveWorkspace } from '../support/client.js';
import { GitServer } from '../../testkit/git-server.js';
import { CallFailed, listen, listTasks, streamImageBuildLog } from '../support/gitpod-log-client.js';
import { BASE_IMAGE, dockerfile, gitSource, rand } from '../../testkit/requests.js';
import { freePort, ROOT, startStack, type Stack } from '../../testkit/stack.js';
import { buildIdOf, lastOf, terminalMessages, watchBuild } from '../support/streams.js';

/** One stack in supervisor mode, two API processes (each its own supervisor port and public URL), one worker. */
let stack: Stack;
let git: GitServer;
let apis: ImageBuilderClient[];
const publicUrls: string[] = [];
let files: Server;
let filesPort: number;

beforeAll(async () => {
  [stack, git] = await Promise.all([startStack({ apis: 0, workers: 1, env: { IMGBUILDER_LOG_INFO: 'supervisor' } }), GitServer.start()]);
  for (const port of [await freePort(), await freePort()]) publicUrls.push(`http://127.0.0.1:${port}`);
  // Both API pods start side by side; apis[i] is the pod serving publicUrls[i].
  const pods = await Promise.all(publicUrls.map((url) => stack.startApi({ IMGBUILDER_SUPERVISOR_ADDR: url.replace('http://', ''), IMGBUILDER_PUBLIC_URL: url })));
  apis = pods.map((p) => connect(stack.apiAddrs[stack.apis.indexOf(p)]));
  // A download source that refuses every request.
  files = createServer((_req, res) => res.writeHead(403).end('forbidden'));
  await new Promise<void>((resolve) => files.listen(0, '127.0.0.1', resolve));
  filesPort = (files.address() as AddressInfo).port;
});

afterAll(async () => {
  for (const a of apis ?? []) a.close();
  files?.close();
  git?.stop();
  await stack?.stop();
});

const logOf = (msgs: BuildResponse[]) => logs(apis[0], { buildId: buildIdOf(msgs)! });
const fileSource = (spec: NonNullable<BuildSource['from']> & { $case: 'file' }): BuildSource => ({ from: spec });

describe('base_image_name_resolved naming an image that is gone', () => {
  it('builds from the source as if the field were empty, saying why in one log line; a digest-form name falls back too', async () => {
    git.commit('restart', { Dockerfile: dockerfile('echo built-from-source') });
    const source = gitSource(git.url('restart'));
    const expected = await resolveWorkspace(apis[0], { source });
    const goneTag = `${stack.env.IMGBUILDER_BASE_REPOSITORY}:${'0'.repeat(64)}`;

    const msgs = await build(apis[0], { source, baseImageNameResolved: goneTag });
    expect(lastOf(msgs).status, lastOf(msgs).message).toBe(BuildStatus.done_success);
    expect(lastOf(msgs)).toMatchObject({ ref: expected.ref, baseRef: expected.baseRef });
    const log = await logOf(msgs);
    expect(log).toContain('built-from-source');
    const why = log.split('\n').filter((l) => l.includes('base_image_name_resolved'));
    expect(why).toHaveLength(1);
    expect(why[0]).toContain(goneTag);
    expect(why[0]).toMatch(/cannot resolve image.*building from the source instead/);

    // Gitpod stores digest-form names; one that is gone now finds the image the source built: one done_success.
    const goneDigest = `${BASE_IMAGE.split(':latest')[0]}@sha256:${'0'.repeat(64)}`;
    const again = await build(apis[1], { source, baseImageNameResolved: goneDigest });
    expect(again).toHaveLength(1);
    expect(again[0]).toMatchObject({ status: BuildStatus.done_success, ref: expected.ref });
  });

  it('without a usable source the call fails as before: NOT_FOUND "cannot resolve image"', async () => {
    const source: BuildSource = { from: { $case: 'ref', ref: { ref: '' } } };
    const err = await build(apis[0], { source, baseImageNameResolved: `${stack.env.IMGBUILDER_BASE_REPOSITORY}:${'1'.repeat(64)}` }).then(
      () => undefined,
      (e: ServiceError) => e,
    );
    expect(err?.code).toBe(status.NOT_FOUND);
    expect(err?.details).toMatch(/cannot resolve image/);
  });
});

describe('failures caused by the source or Dockerfile start "build failed: " (Gitpod\'s looksLikeUserError)', () => {
  const failed = async (source: BuildSource) => {
    const msgs = await build(apis[0], { source });
    expect(terminalMessages(msgs)).toHaveLength(1);
    expect(lastOf(msgs).status).toBe(BuildStatus.done_failure);
    const log = await logOf(msgs);
    // The log's last word on it says "build failed" once.
    expect(log.trimEnd().split('\n').pop()).toBe(`[imgbuilder] ${lastOf(msgs).message}`);
    expect(log).not.toContain('build failed: build failed');
    return lastOf(msgs).message;
  };

  // Classic names steps "Step 3/4 : RUN …" ("non-zero code: 7"), BuildKit "[3/3] RUN …" ("exit code: 7"); a base
  // image BuildKit cannot resolve fails before steps are numbered, as "FROM …".
  it('a failing step names the step and the exit code after the prefix', async () => {
    git.commit('step-fails', { Dockerfile: dockerfile('echo about-to-fail && exit 7') });
    expect(await failed(gitSource(git.url('step-fails')))).toMatch(/^build failed: step "(Step 3\/4 : |\[3\/3\] )RUN echo about-to-fail && exit 7": .*(non-zero code|exit code): 7$/);
  });

  it('a FROM image that cannot be pulled', async () => {
    git.commit('from-missing', { Dockerfile: 'FROM 127.0.0.1:5000/imgbuilder/no-such-image:1\nRUN true\n' });
    expect(await failed(gitSource(git.url('from-missing')))).toMatch(/^build failed: step "(Step 1\/\d : )?FROM 127\.0\.0\.1:5000\/imgbuilder\/no-such-image:1": /);
  });

  it('a missing Dockerfile and a context that is not a directory', async () => {
    git.commit('no-dockerfile', { 'README.md': 'no Dockerfile here\n' });
    expect(await failed(gitSource(git.url('no-dockerfile'), { dockerfilePath: 'sub/Dockerfile' }))).toBe('build failed: Dockerfile not found: sub/Dockerfile does not exist in the build context');
    git.commit('bad-context', { Dockerfile: dockerfile('true') });
    expect(await failed(gitSource(git.url('bad-context'), { contextPath: 'missing-dir' }))).toBe('build failed: context_path missing-dir is not a directory in the build context');
  });

  it('an unreachable git remote and a download the server refuses', async () => {
    const closed = await freePort();
    const commit = 'a'.repeat(40);
    expect(await failed(gitSource(`git://127.0.0.1:${closed}/gone-${rand()}`, { mode: CloneTargetMode.REMOTE_COMMIT, target: commit }))).toMatch(/^build failed: git clone of git:\/\/127\.0\.0\.1:\d+\/gone-\w+ failed: /);
    const digest = `sha256:${createHash('sha256').update('FROM scratch\n').digest('hex')}`;
    const download = fileSource({
      $case: 'file',
      file: {
        source: { spec: { $case: 'download', download: { files: [{ url: `http://127.0.0.1:${filesPort}/Dockerfile-${rand()}`, filePath: 'Dockerfile', digest }], targetLocation: '' } } },
        dockerfilePath: 'Dockerfile',
        contextPath: '',
        dockerfileVersion: '',
      },
    });
    expect(await failed(download)).toBe('build failed: download of Dockerfile failed: HTTP 403');
  });
});

describe('IMGBUILDER_LOG_INFO=supervisor: Gitpod streams the live log from log_info as from a workspace supervisor', () => {
  it('log_info names the public origin and a per-build token; TasksStatus then Listen replay, follow and end with the build, byte for byte what Logs sends, from any API pod', async () => {
    git.commit('supervised', { Dockerfile: dockerfile('echo live-one', 'sleep 4', 'echo live-two') });
    const b = watchBuild(apis[0], { source: gitSource(git.url('supervised')) });
    await b.until((m) => Boolean(m.find((x) => x.info?.logInfo?.url)), 'log_info');
    const info = b.messages.find((m) => m.info?.logInfo?.url)!.info!;
    const logInfo = info.logInfo as LogInfo;
    expect(logInfo.url).toBe(`${publicUrls[0]}/_supervisor/v1`);
    expect(Object.keys(logInfo.headers)).toEqual(['x-gitpod-owner-token']);
    expect(logInfo.headers['x-gitpod-owner-token']).not.toContain(info.buildId);

    // The other API pod serves it too: same token, that pod's origin.
    const elsewhere = { url: `${publicUrls[1]}/whatever/path`, headers: logInfo.headers };
    let liveOneBeforeEnd: boolean | undefined;
    const streamed = await streamImageBuildLog(elsewhere, (chunk) => {
      if (chunk.includes('live-one') && liveOneBeforeEnd === undefined) liveOneBeforeEnd = terminalMessages(b.messages).length === 0;
    });
    const built = await b.ended;
    expect(lastOf(built.messages).status, lastOf(built.messages).message).toBe(BuildStatus.done_success);
    expect(liveOneBeforeEnd).toBe(true);
    expect(streamed.tasks).toHaveLength(1);
    expect(streamed.tasks[0].getTerminal()).toBe(info.buildId);
    expect(streamed.exitCodes).toEqual([0]);
    expect(streamed.text).toBe(await logs(apis[1], { buildId: info.buildId }));
    expect(streamed.text).toMatch(/^\[imgbuilder\] build /);
    expect(streamed.text).toContain('live-two');

    // A finished build: the task is closed, and Listen replays the whole log from object storage.
    const replay = await streamImageBuildLog(logInfo);
    expect(replay.tasks[0].getState()).toBe(2 /* CLOSED */);
    expect(replay.text).toBe(streamed.text);
  });

  it('a wrong, forged or expired token is refused UNAUTHENTICATED; a token grants its own build only', async () => {
    git.commit('token-build', { Dockerfile: dockerfile('echo token-build') });
    const msgs = await build(apis[0], { source: gitSource(git.url('token-build')) });
    const info = msgs.find((m) => m.info?.logInfo?.url)!.info!;
    const url = info.logInfo!.url;
    const refusal = (headers: Record<string, string>) => listTasks(url, headers).then(() => undefined, (e: unknown) => e);

    const token = info.logInfo!.headers['x-gitpod-owner-token'];
    const mid = token.length >> 1;
    const forged = `${token.slice(0, mid)}${token[mid] === 'A' ? 'B' : 'A'}${token.slice(mid + 1)}`;
    const refused: Record<string, string>[] = [{}, { 'x-gitpod-owner-token': 'not-a-token' }, { 'x-gitpod-owner-token': forged }];
    for (const headers of refused) {
      const err = await refusal(headers);
      expect(err).toBeInstanceOf(CallFailed);
      expect((err as CallFailed).end.code).toBe(status.UNAUTHENTICATED);
    }
    // Signed with the installation's current log-token key, but expired.
    const keys = logTokenKeys(stack.env.IMGBUILDER_SECRET_KEY, '1');
    const expired = new LogTokens(keys, 1000, 86_400_000, () => Date.now() - 60_000).issue(info.buildId);
    const err = await refusal({ 'x-gitpod-owner-token': expired });
    expect((err as CallFailed).end).toMatchObject({ code: status.UNAUTHENTICATED, message: expect.stringMatching(/missing, invalid or expired/) });
    // Signed under a key id the API does not (or no longer) use: rotating IMGBUILDER_LOG_TOKEN_KEY_ID revokes tokens.
    const retired = new LogTokens(logTokenKeys(stack.env.IMGBUILDER_SECRET_KEY, 'retired'), 3_600_000, 86_400_000).issue(info.buildId);
    expect(((await refusal({ 'x-gitpod-owner-token': retired })) as CallFailed).end.code).toBe(status.UNAUTHENTICATED);

    const other = await listen(url, info.logInfo!.headers, 'some-other-build').then(() => undefined, (e: unknown) => e);
    expect((other as CallFailed).end.code).toBe(status.NOT_FOUND);

    // A build that ended longer ago than IMGBUILDER_LOG_TOKEN_TTL_AFTER_END (24h): even a fresh token of it lapses.
    const fresh = new LogTokens(keys, 3_600_000, 86_400_000).issue(info.buildId);
    expect(await refusal({ 'x-gitpod-owner-token': fresh })).toBeUndefined();
    const redis = new Redis(stack.env.REDIS_URL, { maxRetriesPerRequest: 2 });
    await redis.hset(`{${stack.env.IMGBUILDER_REDIS_NAMESPACE}}:build:${info.buildId}`, 'finishedAt', String(Math.floor(Date.now() / 1000) - 2 * 86_400));
    redis.disconnect();
    expect(((await refusal({ 'x-gitpod-owner-token': fresh })) as CallFailed).end.code).toBe(status.UNAUTHENTICATED);
  });
});

describe('wire compatibility: a client whose codec owes nothing to ts-proto (grpc-js dynamic client, @grpc/proto-loader)', () => {
  // The shared contract, loaded as an outside client would; its import comes from the project's own proto/.
  const shared = join(ROOT, '..', 'shared', 'proto');
  const dirs = [...(existsSync(join(shared, 'imgbuilder.proto')) ? [shared] : []), join(ROOT, 'proto')];
  type Dynamic = Client & Record<string, (...args: unknown[]) => unknown>;
  const raw: Record<string, Buffer[]> = {};
  let client: Dynamic;
  let root: protobuf.Root;

  beforeAll(() => {
    const def = protoLoader.loadSync('imgbuilder.proto', { includeDirs: dirs, keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
    const service = def['builder.ImageBuilder'] as Record<string, MethodDefinition<unknown, unknown>>;
    // Keep every response's bytes, to check them against the contract below.
    const recording = Object.fromEntries(
      Object.entries(service).map(([name, m]) => [name, { ...m, responseDeserialize: (b: Buffer) => ((raw[name] ??= []).push(b), m.responseDeserialize(b)) }]),
    );
    const Ctor = makeGenericClientConstructor(recording, 'ImageBuilder');
    client = new Ctor(stack.apiAddrs[1], credentials.createInsecure()) as Dynamic;
    root = new protobuf.Root();
    root.resolvePath = (_origin, target) => dirs.map((d) => join(d, target)).find((p) => existsSync(p)) ?? target;
    root.loadSync('imgbuilder.proto', { keepCase: true });
  });
  afterAll(() => client?.close());

  const unary = <T>(method: string, req: unknown) =>
    new Promise<T>((resolve, reject) => client[method](req, (err: ServiceError | null, res: T) => (err ? reject(err) : resolve(res))));
  const stream = <T>(method: string, req: unknown) =>
    new Promise<T[]>((resolve, reject) => {
      const out: T[] = [];
      const call = client[method](req) as ClientReadableStream<T>;
      call.on('data', (m: T) => out.push(m));
      call.on('error', reject);
      call.on('end', () => resolve(out));
    });

  it('every rpc decodes without unknown fields or out-of-range enums, and protobufjs-encoded requests are understood', async () => {
    git.commit('wire', { Dockerfile: dockerfile('echo over-the-wire') });
    const source = { file: { source: { git: { remote_uri: git.url('wire'), target_mode: 'REMOTE_HEAD' } }, dockerfile_path: 'Dockerfile' } };

    const base = await unary<{ ref: string }>('ResolveBaseImage', { ref: BASE_IMAGE });
    expect(base.ref).toMatch(/^127\.0\.0\.1:5000\/imgbuilder\/busybox@sha256:[a-f0-9]{64}$/);
    const before = await unary<{ status: string; ref: string; base_ref: string }>('ResolveWorkspaceImage', { source });
    expect(before.status).toBe('unknown');

    type Info = { build_id: string; started_at: string; status: string; log_info: { url: string; headers: Record<string, string> } };
    const msgs = await stream<{ status: string; ref: string; base_ref: string; message: string; info: Info | null }>('Build', { source, triggered_by: 'wire-test' });
    expect(msgs.map((m) => m.status).filter((st) => st !== 'running')).toEqual(['done_success']);
    for (const m of msgs) expect(m).toMatchObject({ ref: before.ref, base_ref: before.base_ref });
    const info = msgs.find((m) => m.status === 'running')!.info!;
    expect(info).toMatchObject({ status: 'running', ref: before.ref, log_info: { url: `${publicUrls[1]}/_supervisor/v1` } });
    expect(Number(info.started_at)).toBeGreaterThan(1_600_000_000);
    expect((await unary<{ status: string }>('ResolveWorkspaceImage', { source })).status).toBe('done_success');

    const logged = await stream<{ content: Buffer }>('Logs', { build_id: info.build_id });
    expect(Buffer.concat(logged.map((m) => m.content)).toString()).toBe(await logs(apis[0], { buildId: info.build_id }));
    expect(Buffer.concat(logged.map((m) => m.content)).toString()).toContain('over-the-wire');
    expect(await unary<{ builds: unknown[] }>('ListBuilds', {})).toHaveProperty('builds');

    const types: Record<string, string> = {
      ResolveBaseImage: 'ResolveBaseImageResponse',
      ResolveWorkspaceImage: 'ResolveWorkspaceImageResponse',
      Build: 'BuildResponse',
      Logs: 'LogsResponse',
      ListBuilds: 'ListBuildsResponse',
    };
    for (const [method, type] of Object.entries(types)) {
      const T = root.lookupType(`builder.${type}`);
      expect(raw[method]?.length, method).toBeGreaterThan(0);
      for (const bytes of raw[method]) {
        const decoded = T.decode(bytes);
        expect(T.verify(decoded), `${method}: enum or type out of range`).toBeNull();
        // Unknown fields are dropped on decode: re-encoding would come out shorter.
        expect(T.encode(decoded).finish().length, `${method}: unknown fields`).toBe(bytes.length);
      }
    }
  });
});
