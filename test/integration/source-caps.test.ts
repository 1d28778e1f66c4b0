import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BuildStatus, type ImageBuilderClient } from '@imgbuilder/proto';
import { ObjectStore, objectStoreOptions } from '@imgbuilder/common/object-store';
import { loadEnv } from '@imgbuilder/common/config';
import { build, connect, logs } from '../support/client.js';
import { GitServer } from '../../testkit/git-server.js';
import { BASE_IMAGE, dockerfile, downloadInit, fileSource, gitInit, rand, sha256, snapshotInit } from '../../testkit/requests.js';
import { tarOf } from '../support/tar.js';
import { lastOf } from '../support/streams.js';
import { startStack, type Stack } from '../../testkit/stack.js';

// Sources under a stack of their own (sources.test.ts runs on the defaults): the context caps, and local sources.
describe('context caps and local sources (a stack with small caps and IMGBUILDER_ALLOW_LOCAL_SOURCES=true)', () => {
  let tight: Stack;
  let git: GitServer;
  let client: ImageBuilderClient;
  let objects: ObjectStore;

  beforeAll(async () => {
    [tight, git] = await Promise.all([
      startStack({ apis: 1, workers: 1, env: { IMGBUILDER_MAX_CONTEXT_BYTES: '64KiB', IMGBUILDER_MAX_CONTEXT_FILES: '20', IMGBUILDER_ALLOW_LOCAL_SOURCES: 'true' } }),
      GitServer.start(),
    ]);
    client = connect(tight.apiAddrs[0]);
    objects = new ObjectStore(objectStoreOptions(loadEnv(tight.env)));
  });

  afterAll(async () => {
    client?.close();
    git?.stop();
    await tight?.stop();
  });

  it('more files than IMGBUILDER_MAX_CONTEXT_FILES, or more bytes than IMGBUILDER_MAX_CONTEXT_BYTES: done_failure saying which', async () => {
    const many: Record<string, string> = { Dockerfile: dockerfile('echo many') };
    for (let i = 0; i < 30; i++) many[`f/${i}.txt`] = String(i);
    git.commit('many-files', many);
    git.commit('big-file', { Dockerfile: dockerfile('echo big'), 'big.bin': 'x'.repeat(100 * 1024) });
    const bigKey = `snapshots/${rand()}-big.tar`;
    await objects.put(bigKey, await tarOf({ Dockerfile: dockerfile('echo big'), 'big.bin': 'y'.repeat(100 * 1024) }));
    const [files, bytes, snapshot] = await Promise.all([
      build(client, { source: fileSource(gitInit({ remoteUri: git.url('many-files') })) }),
      build(client, { source: fileSource(gitInit({ remoteUri: git.url('big-file') })) }),
      build(client, { source: fileSource(snapshotInit(bigKey)) }),
    ]);
    expect(lastOf(files)).toMatchObject({ status: BuildStatus.done_failure, message: expect.stringContaining('more than 20 files (IMGBUILDER_MAX_CONTEXT_FILES)') });
    expect(lastOf(bytes)).toMatchObject({ status: BuildStatus.done_failure, message: expect.stringContaining('larger than 65536 bytes (IMGBUILDER_MAX_CONTEXT_BYTES)') });
    expect(lastOf(snapshot)).toMatchObject({ status: BuildStatus.done_failure, message: expect.stringContaining('IMGBUILDER_MAX_CONTEXT_BYTES') });
  });

  it('file:// remotes and local download paths are allowed', async () => {
    const hello = `local-download-${rand()}`;
    const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-local-src-'));
    mkdirSync(join(dir, 'd'));
    writeFileSync(join(dir, 'd', 'hello.txt'), hello);
    git.commit('local-repo', { Dockerfile: `FROM ${BASE_IMAGE}\nCOPY hello.txt /hello.txt\nRUN cat /hello.txt\n` });
    const msgs = await build(client, {
      source: fileSource({
        spec: {
          $case: 'composite',
          composite: {
            initializer: [gitInit({ remoteUri: `file://${git.root}/local-repo` }), downloadInit([{ url: `file://${join(dir, 'd', 'hello.txt')}`, filePath: 'hello.txt', digest: sha256(hello) }])],
          },
        },
      }),
    });
    expect(lastOf(msgs).status, lastOf(msgs).message).toBe(BuildStatus.done_success);
    expect(await logs(client, { buildId: msgs[0].info!.buildId })).toContain(hello);
  });
});
