import { BuildStatus, type BuildSource, type ImageBuilderClient } from '@imgbuilder/proto';
import { buildStages } from '../support/build-stages.js';
import { ownClient, startBuild, waitReady } from '../support/grpc.js';
import { manualBuild, untag } from '../support/manual-build.js';
import { delta, fmt, target, targetText, type Row, type Target } from '../support/report.js';
import { benchStack, readEvents, type BenchStack } from '../support/stack.js';
import { median } from '../support/stats.js';
import { commitSource, nonce, smallDockerfile } from '../support/workloads.js';
import type { Scenario } from './context.js';

interface Run {
  ms: number;
  /** Stage durations (ms); `build` is the engine build in both kinds of run. */
  stages: Record<string, number>;
}

const BY_HAND_BRANCH = 'by-hand';

/**
 * Scenario 1. The same small Dockerfile from the same git repository, built (a) by the manual script and (b) through
 * `Build`, cold and warm:
 * - cold: a fresh nonce in the first RUN step, committed separately for (a) (on branch `by-hand`, which the script
 *   clones) and for (b) (a commit Build fetches by id), so neither finds the other's layers in the engine cache and
 *   the workspace image does not exist yet;
 * - warm: those same two commits built again — (a) reruns the script, (b) calls Build with force_rebuild — so every
 *   step is an engine cache hit and every layer is already in the registry. Warm runs are cheap, so each pair has
 *   several, interleaved a/b.
 * Pairs alternate which side goes first, so drift on the shared machine hits both sides alike. The figures are
 * medians of per-pair differences and ratios.
 */
export const overheadScenario: Scenario = {
  name: 'overhead',
  title: 'Overhead of Build vs. the same steps by hand',
  async run(ctx) {
    const pairs = ctx.quick ? 1 : 6;
    const warmReps = ctx.quick ? 1 : 3;
    // The by-hand side can only use the classic builder (the Docker CLI here has no buildx): so does the worker, for a
    // like-for-like overhead. BuildKit's figures are in the `cache` scenario.
    const stack = await benchStack({ apis: 1, workers: 1, env: { IMGBUILDER_BUILDER: 'classic' } });
    const manualTags: string[] = [];
    try {
      const client = ownClient(stack.apiAddrs[0]);
      await waitReady(client);
      const repo = `overhead-${stack.namespace}`;
      const url = ctx.git.url(repo);
      ctx.git.commit(repo, { 'README.md': 'imgbuilder overhead benchmark\n' });

      const newManual = () => {
        const n = nonce();
        const commit = ctx.git.commit(repo, { Dockerfile: smallDockerfile(n) }, BY_HAND_BRANCH);
        const ref = (kind: string) => `127.0.0.1:5000/${stack.namespace}/manual-${kind}:${n}`;
        const opts = { remote: url, branch: BY_HAND_BRANCH, commit, base: ref('base'), workspace: ref('workspace'), dockerHost: ctx.env.DOCKER_HOST };
        manualTags.push(opts.base, opts.workspace);
        return () => manualBuild(opts);
      };
      const newImgbuilder = () => {
        const source = commitSource(url, ctx.git.commit(repo, { Dockerfile: smallDockerfile(nonce()) }));
        let built = false;
        return async () => {
          const r = await timedBuild(stack, client, source, built);
          built = true;
          return r;
        };
      };

      // Untimed: the first build of a fresh worker loads code paths and opens connections; the first push to a new
      // repository creates it. Neither is what a user's hundredth build pays. (Quick runs' numbers mean nothing anyway.)
      if (!ctx.quick) {
        ctx.progress('warm-up');
        const wb = newImgbuilder();
        await wb();
        await wb();
        const wa = newManual();
        await wa();
        await wa();
      }

      const cold: { a: Run; b: Run }[] = [];
      const warm: { a: Run; b: Run }[] = [];
      for (let i = 0; i < pairs; i++) {
        ctx.progress(`pair ${i + 1}/${pairs}: cold, then ${warmReps} warm each`);
        const a = newManual();
        const b = newImgbuilder();
        const aFirst = i % 2 === 0;
        const pair = async () => {
          if (aFirst) {
            const ra = await a();
            return { a: ra, b: await b() };
          }
          const rb = await b();
          return { a: await a(), b: rb };
        };
        cold.push(await pair());
        for (let w = 0; w < warmReps; w++) warm.push(await pair());
      }
      client.close();

      const m: Record<string, number> = { pairs, warmRuns: warm.length };
      const rows: Row[] = [];
      const targets: Target[] = [];
      for (const [kind, runs] of [['cold', cold], ['warm', warm]] as const) {
        const outside = (r: Run) => r.ms - r.stages.build;
        m[`${kind}ManualMs`] = median(runs.map((p) => p.a.ms));
        m[`${kind}ImgbuilderMs`] = median(runs.map((p) => p.b.ms));
        m[`${kind}Ratio`] = median(runs.map((p) => p.b.ms / p.a.ms));
        m[`${kind}OverheadMs`] = median(runs.map((p) => p.b.ms - p.a.ms));
        m[`${kind}EngineBuildManualMs`] = median(runs.map((p) => p.a.stages.build));
        m[`${kind}EngineBuildImgbuilderMs`] = median(runs.map((p) => p.b.stages.build));
        m[`${kind}OverheadOutsideEngineMs`] = median(runs.map((p) => outside(p.b) - outside(p.a)));
        const tOver = target(`${kind}OverheadMs`, m[`${kind}OverheadMs`], '<=', 250);
        targets.push(tOver);
        let ratioTarget: string | undefined;
        if (kind === 'warm') {
          const t = target('warmRatio', m.warmRatio, '<=', 1.05);
          targets.push(t);
          ratioTarget = `ratio ${targetText(t)}`;
        }
        rows.push(
          {
            figure: `${kind}: Build → terminal status (median of ${runs.length})`,
            value: m[`${kind}ImgbuilderMs`],
            unit: 'ms',
            baseline: { label: 'by hand', value: m[`${kind}ManualMs`] },
            compare: `median pair ratio ×${m[`${kind}Ratio`].toFixed(3)}`,
            target: ratioTarget,
          },
          { figure: `${kind}: overhead (median of pair differences)`, value: m[`${kind}OverheadMs`], unit: 'ms', compare: `${delta(m[`${kind}ImgbuilderMs`], m[`${kind}ManualMs`], 'ms')} (of medians)`, target: targetText(tOver, 'ms') },
          {
            figure: `${kind}: overhead outside the engine build`,
            value: m[`${kind}OverheadOutsideEngineMs`],
            unit: 'ms',
            compare: `engine build ${fmt(m[`${kind}EngineBuildImgbuilderMs`], 'ms')} vs ${fmt(m[`${kind}EngineBuildManualMs`], 'ms')} by hand`,
          },
        );
      }
      const stageMedians = (runs: Run[]) => Object.fromEntries(Object.keys(runs[0].stages).map((k) => [k, Math.round(median(runs.map((r) => r.stages[k])))]));
      const breakdown = {
        samplesMs: {
          coldManual: cold.map((p) => p.a.ms),
          coldImgbuilder: cold.map((p) => p.b.ms),
          warmManual: warm.map((p) => p.a.ms),
          warmImgbuilder: warm.map((p) => p.b.ms),
        },
        stagesMs: {
          coldImgbuilder: stageMedians(cold.map((p) => p.b)),
          coldManual: stageMedians(cold.map((p) => p.a)),
          warmImgbuilder: stageMedians(warm.map((p) => p.b)),
          warmManual: stageMedians(warm.map((p) => p.a)),
        },
      };
      const notes = [
        'Both sides: same Dockerfile (4 RUN steps incl. a 1 s sleep), same git server and repository, same registry, same engine and builder (classic).',
        '(a) by hand = bash: git clone --depth 1; docker build; docker push base; docker tag; docker push workspace (docker CLI).',
        '(b) = Build rpc with a REMOTE_COMMIT git source, from the call until the terminal status arrives on the stream.',
        'The engine build itself varies by several hundred ms run to run on a shared machine; "outside the engine build" compares everything else per pair (total minus the engine build stage) and is the steadier overhead figure.',
        `Stage medians, ms — imgbuilder cold: ${fmtStages(breakdown.stagesMs.coldImgbuilder)}; by hand cold: ${fmtStages(breakdown.stagesMs.coldManual)}`,
        `Stage medians, ms — imgbuilder warm: ${fmtStages(breakdown.stagesMs.warmImgbuilder)}; by hand warm: ${fmtStages(breakdown.stagesMs.warmManual)}`,
      ];
      return { params: { pairs, warmRunsPerPair: warmReps }, metrics: m, rows, targets, notes, breakdown };
    } finally {
      await untag(manualTags, ctx.env.DOCKER_HOST);
      await stack.close();
    }
  },
};

async function timedBuild(stack: BenchStack, client: ImageBuilderClient, source: BuildSource, forceRebuild: boolean): Promise<Run> {
  const t0 = Date.now();
  const call = startBuild(client, { source, forceRebuild });
  const [{ msg, at }, first] = await Promise.all([call.done, call.first]);
  if (msg.status !== BuildStatus.done_success) throw new Error(`build failed: ${msg.message}`);
  const events = await readEvents(stack.redis, stack.namespace, first.info?.buildId ?? '');
  return { ms: at - t0, stages: buildStages(events, t0, at) };
}

function fmtStages(s: Record<string, number>): string {
  return Object.entries(s)
    .map(([k, v]) => `${k} ${Number.isFinite(v) ? v : 'n/a'}`)
    .join(', ');
}
