import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { BuildStore, redisKeys, type BuildEvent } from '@imgbuilder/common/build-life';
import { freePort, ROOT, ServiceProcess, startStack, type Stack, type StackOptions } from '../../testkit/stack.js';

export interface BenchStack extends Stack {
  /** The Redis namespace (and repository prefix) of this stack. */
  namespace: string;
  redis: Redis;
  /** Starts one more API process under `node --cpu-prof`; its profile is written when it stops (SIGTERM). */
  startProfiledApi(profileDir: string): Promise<ServiceProcess>;
  /** Stops every process (profiled APIs gracefully, so they write their profile) and deletes this stack's Redis keys. */
  close(): Promise<void>;
}

const open = new Set<BenchStack>();

/** Closes every stack still running (the bench was interrupted): no API or worker process outlives the bench. */
export async function closeAllStacks(): Promise<void> {
  await Promise.all([...open].map((s) => s.close().catch(() => undefined)));
}

/**
 * The test harness's stack with production settings where the harness deviates (`info` logging: the harness's
 * `debug` costs the API a log line per cache hit; default worker lock and stalled-check timings instead of the
 * harness's fast fault-test ones), and a cleanup of the namespace's Redis keys, so benchmark runs leave nothing
 * behind in the shared Redis.
 */
export async function benchStack(opts: StackOptions = {}): Promise<BenchStack> {
  const production = { LOG_LEVEL: 'info', IMGBUILDER_WORKER_LOCK_TIMEOUT: '30s', IMGBUILDER_STALLED_CHECK_INTERVAL: '15s' };
  const stack = await startStack({ ...opts, env: { ...production, ...opts.env } });
  const namespace = stack.env.IMGBUILDER_REDIS_NAMESPACE;
  const redis = new Redis(stack.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: 3 });
  const profiled: ServiceProcess[] = [];
  const bench: BenchStack = Object.assign(stack, {
    namespace,
    redis,
    async startProfiledApi(profileDir: string) {
      mkdirSync(profileDir, { recursive: true });
      const port = await freePort();
      const name = `api-${stack.apis.length}-profiled`;
      const child = spawn(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, '--enable-source-maps', join(ROOT, 'apps/api/dist/main.js')], {
        cwd: ROOT,
        env: { PATH: process.env.PATH, HOME: process.env.HOME, ...stack.env, IMGBUILDER_GRPC_ADDR: `127.0.0.1:${port}`, IMGBUILDER_METRICS_ADDR: `127.0.0.1:${await freePort()}` },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const p = new ServiceProcess(name, child, join(stack.logDir, `${name}.log`));
      stack.apis.push(p);
      stack.apiAddrs.push(`127.0.0.1:${port}`);
      profiled.push(p);
      await p.waitForLine(/API listening/);
      return p;
    },
    async close() {
      open.delete(bench);
      // SIGTERM lets a profiled API exit through process.exit, which is when node writes the profile.
      await Promise.all(profiled.map((p) => Promise.race([p.kill('SIGTERM'), new Promise((r) => setTimeout(r, 15_000))])));
      await stack.stop();
      await deleteNamespace(redis, namespace).catch(() => undefined);
      redis.disconnect();
    },
  });
  open.add(bench);
  return bench;
}

async function deleteNamespace(redis: Redis, namespace: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `{${namespace}}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await redis.unlink(...keys);
  } while (cursor !== '0');
}

export interface StreamEntry {
  /** Milliseconds part of the stream id: when Redis appended the entry (Redis server clock). */
  ms: number;
  event: BuildEvent;
}

/** A build's whole event stream as stored in Redis. */
export async function readEvents(redis: Redis, namespace: string, buildId: string): Promise<StreamEntry[]> {
  const events = await new BuildStore(redis, redisKeys(namespace)).readEvents(buildId, '0-0', Number.MAX_SAFE_INTEGER);
  return events.map((event) => ({ ms: Number(event.id.split('-')[0]), event }));
}

/** When the worker marked the build running (the `running` state event), or NaN. */
export async function runningAt(redis: Redis, namespace: string, buildId: string): Promise<number> {
  const e = (await readEvents(redis, namespace, buildId)).find((x) => x.event.kind === 'state' && x.event.state === 'running');
  return e ? e.ms : NaN;
}
