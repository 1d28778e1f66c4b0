import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from 'ioredis';
import type { ImageBuilderClient } from '@imgbuilder/proto';
import { connect } from '../support/client.js';
import { GitServer } from '../../testkit/git-server.js';
import { concurrentBuildsShareOneBuild, workerKilledMidBuild } from '../support/scenarios.js';
import { ROOT, startStack, type Stack } from '../../testkit/stack.js';

// The same scenarios as build.test.ts and faults.test.ts, against a 3-node Redis Cluster this file starts itself
// (infra/local/redis-cluster.sh): every key of a build and BullMQ's queue must land in one slot.
const clusterDir = mkdtempSync(join(tmpdir(), 'imgbuilder-cluster-'));
const cluster = (cmd: 'up' | 'down') =>
  execFileSync('bash', [join(ROOT, 'infra/local/redis-cluster.sh'), cmd], { env: { ...process.env, IMGBUILDER_CLUSTER_DIR: clusterDir }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

let redisUrl: string;
let stack: Stack;
let git: GitServer;
let a: ImageBuilderClient;
let b: ImageBuilderClient;

beforeAll(async () => {
  redisUrl = /^export REDIS_URL=(\S+)$/m.exec(cluster('up'))![1];
  [stack, git] = await Promise.all([startStack({ apis: 2, workers: 2, env: { REDIS_URL: redisUrl } }), GitServer.start()]);
  a = connect(stack.apiAddrs[0]);
  b = connect(stack.apiAddrs[1]);
});

afterAll(async () => {
  a?.close();
  b?.close();
  git?.stop();
  await stack?.stop();
  cluster('down');
});

describe('on a 3-node Redis Cluster', () => {
  it('12 concurrent builds of one ref over two API processes share one build, one build_id and one push', async () => {
    await concurrentBuildsShareOneBuild(stack, [a, b], git, 'cluster-dedupe');
  });

  it('a worker killed mid-build loses the build to another worker; Build and Logs clients get the rest and done_success', async () => {
    const { pickupMs, buildId } = await workerKilledMidBuild(stack, [a, b], git, 'cluster-killed');
    console.info(`Redis Cluster: worker SIGKILL → pick-up by another worker: ${pickupMs} ms`);
    expect(pickupMs).toBeLessThan(5_000 + 2_000 + 15_000);

    // The build's keys and the queue's keys share one hash slot, whichever node serves it.
    const ns = stack.env.IMGBUILDER_REDIS_NAMESPACE;
    const seeds = redisUrl.replace('redis+cluster://', '').split(',').map((hp) => ({ host: hp.split(':')[0], port: Number(hp.split(':')[1]) }));
    const c = new Cluster(seeds);
    try {
      const slots = await Promise.all(
        [`{${ns}}:build:${buildId}`, `{${ns}}:build:${buildId}:events`, `{${ns}}:builds:live`, `{${ns}}:builds:wait`].map((k) => c.cluster('KEYSLOT', k)),
      );
      expect(new Set(slots).size).toBe(1);
      expect(await c.hget(`{${ns}}:build:${buildId}`, 'state')).toBe('done_success');
    } finally {
      c.disconnect();
    }
  });
});
