import { Redis } from 'ioredis';
import { BuildStatus } from '@imgbuilder/proto';
import { RedisServer } from '../../testkit/redis-server.js';
import { BASE_IMAGE } from '../../testkit/requests.js';
import { clients, startBuild } from '../support/grpc.js';
import { fmt, target, type Row } from '../support/report.js';
import { benchStack } from '../support/stack.js';
import { commitSource, nonce } from '../support/workloads.js';
import type { BenchContext, Scenario } from './context.js';

const MiB = 1024 * 1024;

/**
 * Scenario: Redis memory under noisy builds (issue 12). 8 builds at once (2 workers × concurrency 4), each printing
 * 64 MiB, against a private redis-server (so nothing else moves `used_memory`). Peak `used_memory` (sampled every
 * 100 ms, and Redis's own `used_memory_peak`) minus idle. Baseline in the same run: the same builds with
 * IMGBUILDER_LOG_REDIS_TAIL = IMGBUILDER_LOG_MAX_BYTES, i.e. the whole log in Redis, as before the tail.
 */
export const redisMemoryScenario: Scenario = {
  name: 'redis-memory',
  title: 'Redis memory with 8 concurrent builds each printing 64 MiB',
  async run(ctx) {
    const builds = ctx.quick ? 2 : 8;
    const logBytes = ctx.quick ? 8 * MiB : 64 * MiB;
    const tail = () => phase(ctx, 'tail 1MiB', builds, logBytes, {});
    const wholeLog = () => phase(ctx, 'whole log', builds, logBytes, { IMGBUILDER_LOG_REDIS_TAIL: String(logBytes + MiB) });
    // Each phase has its own redis-server: a quick run (whose numbers mean nothing) runs both at once.
    const [tailed, whole] = ctx.quick ? await Promise.all([tail(), wholeLog()]) : [await tail(), await wholeLog()];
    const m = {
      builds,
      logMiB: logBytes / MiB,
      peakAboveIdleMiB: tailed.peakAboveIdle / MiB,
      baselinePeakAboveIdleMiB: whole.peakAboveIdle / MiB,
      makespanMs: tailed.makespanMs,
      baselineMakespanMs: whole.makespanMs,
      failed: tailed.failed + whole.failed,
    };
    const rows: Row[] = [
      {
        figure: `peak Redis used_memory above idle, ${builds} builds × ${m.logMiB} MiB of log`,
        value: m.peakAboveIdleMiB,
        unit: 'MiB',
        baseline: { label: 'whole log in Redis', value: m.baselinePeakAboveIdleMiB },
        target: '< 32 MiB',
      },
      { figure: 'makespan of the builds', value: m.makespanMs / 1000, unit: 's', baseline: { label: 'whole log in Redis', value: m.baselineMakespanMs / 1000 } },
    ];
    return {
      params: { builds, logBytes, workers: 2, workerConcurrency: 4 },
      metrics: m,
      rows,
      targets: ctx.quick ? [] : [target('peakAboveIdleMiB', m.peakAboveIdleMiB, '<', 32)],
      notes: [
        `Each build: one RUN step printing ${m.logMiB} MiB (busybox yes | head -c); default IMGBUILDER_LOG_REDIS_TAIL (1 MiB) vs a tail as large as the log (the behaviour before the tail).`,
        `Private redis-server (noeviction); idle = used_memory with the stack up before the builds; peak = max of 100 ms samples and used_memory_peak. Failed builds: ${m.failed}. Makespans ${fmt(m.makespanMs / 1000, 's')} vs ${fmt(m.baselineMakespanMs / 1000, 's')}.`,
      ],
    };
  },
};

async function phase(ctx: BenchContext, label: string, builds: number, logBytes: number, env: Record<string, string>) {
  const redis = await RedisServer.start();
  // Classic builder, as the figures in the README were measured (and the tests of the same limits run).
  const stack = await benchStack({ apis: 1, workers: 2, env: { REDIS_URL: redis.url, IMGBUILDER_WORKER_CONCURRENCY: '4', IMGBUILDER_BUILDER: 'classic', ...env } });
  const probe = new Redis(redis.url);
  try {
    const cs = await clients([stack.apiAddrs[0]], 2);
    const usedMemory = async (field = 'used_memory') => Number(new RegExp(`^${field}:(\\d+)`, 'm').exec(await probe.info('memory'))?.[1] ?? NaN);
    const idle = await usedMemory();
    const repo = `redis-memory-${stack.namespace}`;
    const sources = Array.from({ length: builds }, () =>
      commitSource(ctx.git.url(repo), ctx.git.commit(repo, { Dockerfile: `FROM ${BASE_IMAGE}\nRUN echo ${nonce()} && yes redis-memory-bench-line-padding-padding-padding | head -c ${logBytes}\n` })),
    );
    ctx.progress(`${label}: ${builds} builds × ${logBytes / MiB} MiB`);
    let peak = idle;
    const sampler = setInterval(() => void usedMemory().then((v) => (peak = Math.max(peak, v)), () => undefined), 100);
    const t0 = Date.now();
    const done = await Promise.all(sources.map((source, i) => startBuild(cs[i % cs.length], { source }, 900_000).done));
    const makespanMs = Date.now() - t0;
    clearInterval(sampler);
    peak = Math.max(peak, await usedMemory('used_memory_peak'));
    for (const c of cs) c.close();
    return { peakAboveIdle: peak - idle, makespanMs, failed: done.filter((d) => d.msg.status !== BuildStatus.done_success).length };
  } finally {
    probe.disconnect();
    await stack.close();
    await redis.stop();
  }
}
