import { BuildStatus } from '@imgbuilder/proto';
import { clients, startBuild } from '../support/grpc.js';
import { settledManifestPuts } from '../support/registry-log.js';
import { fmt, ratio, target, targetText } from '../support/report.js';
import { benchStack, type BenchStack } from '../support/stack.js';
import { median } from '../support/stats.js';
import { commitSource, nonce, smallDockerfile } from '../support/workloads.js';
import type { Scenario } from './context.js';

/**
 * Scenario 2. N concurrent Build calls for one new source, each from its own connection, alternating between two
 * API processes (two workers listen, so a missed dedupe would show as a second build). Baseline in the same run: one
 * caller building a source of the same shape. Builds executed are counted twice, independently: manifest PUTs of
 * the workspace and base tags in the registry's access log, and "build ended" lines in the workers' logs.
 */
export const dedupeScenario: Scenario = {
  name: 'dedupe',
  title: 'Deduplication of concurrent Build calls',
  async run(ctx) {
    const callers = ctx.quick ? 5 : 100;
    const rounds = ctx.quick ? 1 : 2;
    const stack = await benchStack({ apis: 2, workers: 2 });
    try {
      const cs = await clients(stack.apiAddrs, callers);
      const registryLog = stack.env.IMGBUILDER_LOCAL_REGISTRY_LOG;
      // One repository, a new commit per build: REMOTE_COMMIT sources fetch exactly that commit.
      const repo = `dedupe-${stack.namespace}`;
      const newSource = () => commitSource(ctx.git.url(repo), ctx.git.commit(repo, { Dockerfile: smallDockerfile(nonce()) }));
      const single = async () => {
        const source = newSource();
        const t0 = Date.now();
        const call = startBuild(cs[0], { source });
        const { msg, at } = await call.done;
        if (msg.status !== BuildStatus.done_success) throw new Error(`single build failed: ${msg.message}`);
        return at - t0;
      };
      const burst = async () => {
        const source = newSource();
        const t0 = Date.now();
        const calls = cs.map((c) => startBuild(c, { source }));
        const done = await Promise.all(calls.map((c) => c.done));
        const firsts = await Promise.all(calls.map((c) => c.first));
        const failed = done.filter((d) => d.msg.status !== BuildStatus.done_success);
        if (failed.length) throw new Error(`${failed.length} of ${callers} callers got ${BuildStatus[failed[0].msg.status]}: ${failed[0].msg.message}`);
        const ats = done.map((d) => d.at);
        const ref = done[0].msg.ref;
        const baseRef = done[0].msg.baseRef;
        return {
          ms: Math.max(...ats) - t0,
          spreadMs: Math.max(...ats) - Math.min(...ats),
          buildIds: new Set(firsts.map((f) => f.info?.buildId).filter(Boolean)).size,
          workspacePuts: await settledManifestPuts(registryLog, ref),
          basePuts: await settledManifestPuts(registryLog, baseRef),
          workerRuns: await workerBuildsFor(stack, ref),
        };
      };

      if (!ctx.quick) {
        ctx.progress('warm-up');
        await single();
      }
      const singles: number[] = [];
      const bursts: Awaited<ReturnType<typeof burst>>[] = [];
      for (let r = 0; r < rounds; r++) {
        ctx.progress(`round ${r + 1}/${rounds}: 1 caller and ${callers} callers`);
        if (r % 2 === 0) {
          singles.push(await single());
          bursts.push(await burst());
        } else {
          bursts.push(await burst());
          singles.push(await single());
        }
      }
      for (const c of cs) c.close();

      const m = {
        callers,
        dockerBuilds: Math.max(...bursts.map((b) => b.workspacePuts)),
        baseManifestPuts: Math.max(...bursts.map((b) => b.basePuts)),
        workerBuildsRun: Math.max(...bursts.map((b) => b.workerRuns)),
        distinctBuildIds: Math.max(...bursts.map((b) => b.buildIds)),
        singleCallerMs: median(singles),
        allCallersMs: median(bursts.map((b) => b.ms)),
        ratio: median(bursts.map((b, i) => b.ms / singles[i])),
        terminalSpreadMs: median(bursts.map((b) => b.spreadMs)),
      };
      const tBuilds = target('dockerBuilds', m.dockerBuilds, '==', 1);
      return {
        params: { callers, apiProcesses: 2, workers: 2, rounds },
        metrics: m,
        rows: [
          { figure: `docker builds for ${callers} concurrent calls (registry manifest PUTs)`, value: m.dockerBuilds, unit: '', compare: `worker runs ${m.workerBuildsRun}, build ids ${m.distinctBuildIds}`, target: targetText(tBuilds) },
          {
            figure: `all ${callers} streams terminal (median of ${rounds})`,
            value: m.allCallersMs,
            unit: 'ms',
            baseline: { label: '1 caller', value: m.singleCallerMs },
            compare: ratio(m.allCallersMs, m.singleCallerMs),
          },
          { figure: 'first → last terminal status among callers', value: m.terminalSpreadMs, unit: 'ms' },
        ],
        targets: [tBuilds],
        notes: [
          `${callers} callers, one connection each, alternating over 2 API processes; 2 workers. Time = first call → last caller's terminal status; baseline = one caller, a fresh source of the same shape (${fmt(m.singleCallerMs, 'ms')}).`,
          'Builds counted from the registry access log (PUT of the workspace tag) and from the workers\' "build ended" log lines.',
        ],
      };
    } finally {
      await stack.close();
    }
  },
};

/** "build ended" lines the workers logged for a ref (bounded wait: the line follows the terminal state). */
async function workerBuildsFor(stack: BenchStack, ref: string): Promise<number> {
  const count = () => stack.workers.flatMap((w) => w.lines).filter((l) => l.includes('"build ended"') && l.includes(ref)).length;
  const deadline = Date.now() + 5_000;
  while (count() === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  return count();
}
