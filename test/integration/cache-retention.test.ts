import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CacheRefs } from '@imgbuilder/common/cache-refs';
import { FetchPolicy, installFetchPolicy } from '@imgbuilder/common/fetch-policy';
import { createRedis, type RedisClient } from '@imgbuilder/common/redis';
import { redisKeys } from '@imgbuilder/common/build-life';
import { RegistryClient } from '@imgbuilder/common/registry-client';
import { cacheRetentionDuty } from '../../apps/worker/src/cache-retention.js';
import { dropNamespace } from '../../testkit/redis-server.js';
import { localEnv } from '../../testkit/stack.js';

const REGISTRY = '127.0.0.1:5000';
const DAY = 86_400_000;
const sha = (b: string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/**
 * Pushes a small image of its own to `repo:tag` straight through the registry API (a config blob naming `content`, no
 * layers): the engine is not needed, and the same `content` gives the same manifest digest in any repository.
 */
async function pushImage(repo: string, tag: string, content: string): Promise<string> {
  const config = JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Labels: { content } }, rootfs: { type: 'layers', diff_ids: [] } });
  const start = await fetch(`http://${REGISTRY}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  expect(start.status).toBe(202);
  const location = new URL(start.headers.get('location')!, `http://${REGISTRY}`);
  location.searchParams.set('digest', sha(config));
  expect((await fetch(location, { method: 'PUT', body: config, headers: { 'Content-Type': 'application/octet-stream' } })).status).toBe(201);
  const manifest = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.v2+json', config: { mediaType: 'application/vnd.docker.container.image.v1+json', size: config.length, digest: sha(config) }, layers: [] });
  const put = await fetch(`http://${REGISTRY}/v2/${repo}/manifests/${tag}`, { method: 'PUT', body: manifest, headers: { 'Content-Type': 'application/vnd.docker.distribution.manifest.v2+json' } });
  expect(put.status, await put.text()).toBe(201);
  return sha(manifest);
}

const exists = async (repo: string, tag: string) =>
  (await fetch(`http://${REGISTRY}/v2/${repo}/manifests/${tag}`, { method: 'HEAD', headers: { Accept: 'application/vnd.docker.distribution.manifest.v2+json' } })).status === 200;

describe('layer cache retention (injected clock, the local registry)', () => {
  const ns = `retention-${randomBytes(4).toString('hex')}`;
  const keys = redisKeys(ns);
  const base = `${ns}/base`;
  const workspace = `${ns}/workspace`;
  const cache = `${base}/cache`;
  const redisUrl = localEnv().REDIS_URL;
  let redis: RedisClient;
  let clock = Date.now();
  let refs: CacheRefs;

  beforeAll(() => {
    // As the processes do: their own registry is theirs to reach, loopback or not.
    installFetchPolicy(FetchPolicy.fromEnv({ IMGBUILDER_FETCH_ALLOW: [], IMGBUILDER_FETCH_DENY: [], IMGBUILDER_BASE_REPOSITORY: `${REGISTRY}/${base}`, IMGBUILDER_WORKSPACE_REPOSITORY: `${REGISTRY}/${workspace}` }));
    redis = createRedis(redisUrl);
    refs = new CacheRefs({ redis, keys, registry: new RegistryClient(), repository: `${REGISTRY}/${cache}`, now: () => clock });
  });
  afterAll(async () => {
    redis?.disconnect();
    await dropNamespace(redisUrl, ns);
  });

  it('deletes exactly the cache refs unused past the retention; base and workspace images, refs sharing a live manifest and other tags stay', async () => {
    // One image as base, workspace and (expired) cache ref: deleting the cache ref's manifest must not reach the others.
    await pushImage(base, 'built', 'a');
    await pushImage(workspace, 'built', 'a');
    await pushImage(cache, 'cache-expired', 'a');
    await pushImage(cache, 'cache-recent', 'b');
    // The registry deletes manifests, not tags: an expired ref sharing one with a live ref stays with it.
    await pushImage(cache, 'cache-shared-expired', 'c');
    await pushImage(cache, 'cache-shared-live', 'c');
    await pushImage(cache, 'cache-never-recorded', 'd');
    // A tag that is not a cache ref is never touched, nor the manifest it names.
    await pushImage(cache, 'not-a-cache-ref', 'e');
    await pushImage(cache, 'cache-beside-other-tag', 'e');

    const t0 = clock;
    clock = t0 - 20 * DAY;
    await refs.touch([`${REGISTRY}/${cache}:cache-expired`, `${REGISTRY}/${cache}:cache-shared-expired`, `${REGISTRY}/${cache}:cache-beside-other-tag`]);
    clock = t0 - 13 * DAY;
    await refs.touch([`${REGISTRY}/${cache}:cache-recent`, `${REGISTRY}/${cache}:cache-shared-live`]);
    clock = t0;

    const listed = await refs.list();
    expect(listed.map((r) => r.ref.split(':').pop()).sort()).toEqual(['cache-beside-other-tag', 'cache-expired', 'cache-never-recorded', 'cache-recent', 'cache-shared-expired', 'cache-shared-live']);
    expect(listed[0].lastUsedAt).toBe(t0 - 20 * DAY);
    expect(listed.every((r) => r.bytes > 0 && r.digest.startsWith('sha256:'))).toBe(true);

    const deleted = await refs.prune(14 * DAY);
    expect(deleted.map((r) => r.ref)).toEqual([`${REGISTRY}/${cache}:cache-expired`]);
    expect(await exists(cache, 'cache-expired')).toBe(false);
    for (const [repo, tag] of [
      [base, 'built'],
      [workspace, 'built'],
      [cache, 'cache-recent'],
      [cache, 'cache-shared-expired'],
      [cache, 'cache-shared-live'],
      [cache, 'cache-never-recorded'],
      [cache, 'not-a-cache-ref'],
      [cache, 'cache-beside-other-tag'],
    ]) {
      expect(await exists(repo, tag), `${repo}:${tag}`).toBe(true);
    }
    expect(await redis.hget(keys.cacheLastUse, 'cache-expired')).toBeNull();
    // A ref never recorded got its first sight as its last use: a whole retention period from now.
    expect(await redis.hget(keys.cacheLastUse, 'cache-never-recorded')).toBe(String(t0));
  });

  it("the workers' pass runs once per interval across workers: a second pass inside the interval deletes nothing", async () => {
    await pushImage(cache, 'cache-later', 'f');
    clock -= 30 * DAY;
    await refs.touch([`${REGISTRY}/${cache}:cache-later`]);
    clock += 30 * DAY;
    const log = { info: () => undefined } as unknown as Parameters<typeof cacheRetentionDuty>[0]['log'];
    await redis.set(keys.cacheRetentionDone, '1', 'PX', 60_000);
    await cacheRetentionDuty({ refs, redis, keys, retentionMs: 14 * DAY, log })();
    expect(await exists(cache, 'cache-later')).toBe(true);
    await redis.del(keys.cacheRetentionDone);
    await cacheRetentionDuty({ refs, redis, keys, retentionMs: 14 * DAY, log })();
    expect(await exists(cache, 'cache-later')).toBe(false);
    expect(await exists(base, 'built')).toBe(true);
  });
});
