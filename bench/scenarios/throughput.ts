import { BuildStatus, type ImageBuilderClient } from '@imgbuilder/proto';
import { clients, startBuild } from '../support/grpc.js';
import { fmt, ratio, type Row } from '../support/report.js';
import { benchStack, runningAt, type BenchStack } from '../support/stack.js';
import { p50, p99 } from '../support/stats.js';
import { commitSource, nonce, tinyDockerfile } from '../support/workloads.js';
import type { BenchContext, Scenario } from './context.js';

interface Phase {
  workers: number;
  makespanMs: number;
  buildsPerMin: number;
  queueWaitP50Ms: number;
  queueWaitP99Ms: number;
  failed: number;
}

/**
 * Scenario 5. N distinct small builds (all cache misses) requested at once, drained by 1 worker process with
 * IMGBUILDER_WORKER_CONCURRENCY=1, then N others by 2 worker processes with concurrency 1 each; one shared Docker
 * engine. builds/min = N / (first call → last terminal status). Queue wait per build = its Build call → the worker
 * marking it running (the `running` state event in Redis; stream ids carry Redis's ms clock).
 */
export const throughputScenario: Scenario = {
  name: 'throughput',
  title: 'Throughput and scaling: 1 vs 2 workers on one engine',
  async run(ctx) {
    const n = ctx.quick ? 2 : 40;
    const stack = await benchStack({ apis: 1, workers: 0, env: { IMGBUILDER_WORKER_CONCURRENCY: '1' } });
    try {
      const cs = await clients([stack.apiAddrs[0]], 4);
      await stack.startWorker();
      // Untimed: a fresh worker's first build pays for loading code and opening connections (quick runs skip it).
      if (!ctx.quick) await run(ctx, stack, cs, 'warmup1', 1);
      const one = await run(ctx, stack, cs, 'w1', n);
      await stack.startWorker();
      if (!ctx.quick) await run(ctx, stack, cs, 'warmup2', 2);
      const two = await run(ctx, stack, cs, 'w2', n);
      for (const c of cs) c.close();

      const m = {
        builds: n,
        buildsPerMin1: one.buildsPerMin,
        buildsPerMin2: two.buildsPerMin,
        scaling: two.buildsPerMin / one.buildsPerMin,
        makespanMs1: one.makespanMs,
        makespanMs2: two.makespanMs,
        queueWaitP50Ms1: one.queueWaitP50Ms,
        queueWaitP99Ms1: one.queueWaitP99Ms,
        queueWaitP50Ms2: two.queueWaitP50Ms,
        queueWaitP99Ms2: two.queueWaitP99Ms,
        failed: one.failed + two.failed,
      };
      const rows: Row[] = [
        { figure: `${n} builds, 2 workers × concurrency 1: builds/min`, value: m.buildsPerMin2, unit: '/min', baseline: { label: '1 worker', value: m.buildsPerMin1 }, compare: `scaling ${ratio(m.buildsPerMin2, m.buildsPerMin1)}` },
        { figure: 'queue wait (Build call → running), 2 workers: p99', value: m.queueWaitP99Ms2, unit: 'ms', baseline: { label: '1 worker p99', value: m.queueWaitP99Ms1 }, compare: `p50 ${fmt(m.queueWaitP50Ms2, 'ms')} (1 worker: ${fmt(m.queueWaitP50Ms1, 'ms')})` },
      ];
      return {
        params: { builds: n, workerConcurrency: 1 },
        metrics: m,
        rows,
        targets: [],
        notes: [
          `Each build: FROM busybox + a nonce step + "sleep 0.5", from its own commit (REMOTE_COMMIT); the fixed per-build work (clone, context, container per step, two pushes, log upload) dominates.`,
          `1 worker process (concurrency 1) vs 2 worker processes (concurrency 1 each), one shared Docker engine; makespans ${fmt(m.makespanMs1 / 1000, 's')} vs ${fmt(m.makespanMs2 / 1000, 's')}; failed builds: ${m.failed}.`,
          'With one slot, a build\'s queue wait is the builds ahead of it: p99 ≈ makespan by construction; the figure shows how fast the queue drains.',
        ],
      };
    } finally {
      await stack.close();
    }
  },
};

async function run(ctx: BenchContext, stack: BenchStack, cs: ImageBuilderClient[], label: string, n: number): Promise<Phase> {
  ctx.progress(`${label}: ${n} builds, ${stack.workers.length} worker(s)`);
  // One repository, one commit per build; each build fetches its own commit (REMOTE_COMMIT).
  const repo = `throughput-${stack.namespace}`;
  const sources = Array.from({ length: n }, () => commitSource(ctx.git.url(repo), ctx.git.commit(repo, { Dockerfile: tinyDockerfile(nonce()) })));
  const t0 = Date.now();
  const calls = sources.map((source, i) => ({ at: Date.now(), call: startBuild(cs[i % cs.length], { source }, 600_000) }));
  const done = await Promise.all(calls.map((c) => c.call.done));
  const firsts = await Promise.all(calls.map((c) => c.call.first));
  const end = Math.max(...done.map((d) => d.at));
  const waits = await Promise.all(firsts.map(async (f, i) => (await runningAt(stack.redis, stack.namespace, f.info?.buildId ?? '')) - calls[i].at));
  const makespanMs = end - t0;
  return {
    workers: stack.workers.length,
    makespanMs,
    buildsPerMin: (n * 60_000) / makespanMs,
    queueWaitP50Ms: p50(waits.filter(Number.isFinite)),
    queueWaitP99Ms: p99(waits.filter(Number.isFinite)),
    failed: done.filter((d) => d.msg.status !== BuildStatus.done_success).length,
  };
}
