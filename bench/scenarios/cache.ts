import { BASE_IMAGE } from '../../testkit/requests.js';
import { forgetBuilds } from '../../testkit/engine-cache.js';
import { buildOk, logsStream, ownClient, waitReady } from '../support/grpc.js';
import { manualBuildkit } from '../support/manual-buildkit.js';
import { ratio, target, targetText, type Row } from '../support/report.js';
import { benchStack, type BenchStack } from '../support/stack.js';
import { commitSource, nonce } from '../support/workloads.js';
import type { Scenario } from './context.js';

const BY_HAND_BRANCH = 'by-hand-cache';

/**
 * Scenario 6. The registry-shared layer cache, and independent stages.
 * - cache: a Dockerfile whose first step is expensive (sleep 8) and whose last step changes between builds, built
 *   cold (fresh nonce), warm (last step changed, same engine), and on an emptied engine (that source's BuildKit
 *   cache records and images removed, as on a worker that never built it; last step changed again). Through
 *   `Build` (BuildKit worker: it imports the previous build's inline cache from the registry by itself) and by hand
 *   (clone, BuildKit build with BUILDKIT_INLINE_CACHE=1, push; `cache-from` the previous push on the emptied engine),
 *   each with its own nonce so neither sees the other's layers.
 * - parallel stages: two independent 4 s stages copied into a final one, cold, through a BuildKit worker and through
 *   a classic worker on the same engine.
 */
export const cacheScenario: Scenario = {
  name: 'cache',
  title: 'Registry layer cache (cold, warm, emptied engine) and parallel stages',
  async run(ctx) {
    const expensiveS = ctx.quick ? 1 : 8;
    const stageS = ctx.quick ? 1 : 4;
    const dockerHost = ctx.env.DOCKER_HOST ?? 'unix:///var/run/docker.sock';
    // Both stacks start side by side; one that fails to start does not leave the other running.
    const started = await Promise.allSettled([benchStack({ apis: 1, workers: 1, env: { IMGBUILDER_BUILDER: 'buildkit' } }), benchStack({ apis: 1, workers: 1, env: { IMGBUILDER_BUILDER: 'classic' } })]);
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) {
      await Promise.all(started.map((r) => (r.status === 'fulfilled' ? r.value.close() : undefined)));
      throw failed.reason;
    }
    const [bk, classic] = started.map((r) => (r as PromiseFulfilledResult<BenchStack>).value);
    try {
      const bkClient = ownClient(bk.apiAddrs[0]);
      const classicClient = ownClient(classic.apiAddrs[0]);
      await Promise.all([waitReady(bkClient), waitReady(classicClient)]);
      const repo = `cache-${bk.namespace}`;
      const url = ctx.git.url(repo);
      ctx.git.commit(repo, { 'README.md': 'imgbuilder cache benchmark\n' });
      const timed = async (c: typeof bkClient, dockerfile: string) => (await buildOk(c, { source: commitSource(url, ctx.git.commit(repo, { Dockerfile: dockerfile })) })).ms;
      /** A build of `dockerfile` in repository `name` with its log: the refs it imported, whether `heavy` ran. */
      const logged = async (name: string, dockerfile: string, heavy: string) => {
        const r = await buildOk(bkClient, { source: commitSource(ctx.git.url(name), ctx.git.commit(name, { Dockerfile: dockerfile })) });
        let log = '';
        await logsStream(bkClient, r.first.info!.buildId, (t) => (log += t)).ended;
        const step = new RegExp(`^#(\\d+) \\[[^\\]]*\\] RUN echo ${heavy} `, 'm').exec(log)?.[1];
        const imports = [...log.matchAll(/build cache: importing (\S+) \((.+)\)$/gm)].map((m) => ({ ref: m[1], why: m[2] }));
        return { ms: r.ms, imported: imports.map((i) => i.ref), ownFinal: imports.find((i) => i.why === 'this source')?.ref, heavyCached: step !== undefined && log.includes(`#${step} CACHED`) };
      };

      if (!ctx.quick) {
        ctx.progress('warm-up (untimed)');
        await timed(bkClient, `FROM ${BASE_IMAGE}\nRUN echo warm-up-${nonce()}\n`);
        await timed(classicClient, `FROM ${BASE_IMAGE}\nRUN echo warm-up-${nonce()}\n`);
      }

      const cacheDockerfile = (n: string, last: string) => `FROM ${BASE_IMAGE}\nRUN echo expensive-${n} && sleep ${expensiveS}\nRUN echo last-${n}-${last}\n`;
      const n = nonce();
      ctx.progress('Build: cold, warm, emptied engine');
      const svcCold = await timed(bkClient, cacheDockerfile(n, 'cold'));
      const svcWarm = await timed(bkClient, cacheDockerfile(n, 'warm'));
      await forgetBuilds(dockerHost, n, [bk.env.IMGBUILDER_BASE_REPOSITORY, bk.env.IMGBUILDER_WORKSPACE_REPOSITORY]);
      const svcEmpty = await timed(bkClient, cacheDockerfile(n, 'empty'));

      ctx.progress('by hand: cold, warm, emptied engine with --cache-from');
      const m = nonce();
      const handRepo = `127.0.0.1:5000/${bk.namespace}/hand-cache`;
      const hand = (last: string, cacheFrom?: string) => {
        ctx.git.commit(repo, { Dockerfile: cacheDockerfile(m, last) }, BY_HAND_BRANCH);
        return manualBuildkit({ remote: url, branch: BY_HAND_BRANCH, tag: `${handRepo}:${last}`, cacheFrom, push: true, dockerHost });
      };
      const handCold = await hand('cold');
      const handWarm = await hand('warm');
      await forgetBuilds(dockerHost, m, [handRepo]);
      const handEmpty = await hand('empty', `${handRepo}:warm`);
      await forgetBuilds(dockerHost, m, [handRepo]);

      // A fork: another repository with the cold build's Dockerfile, on an engine that forgot both.
      ctx.progress('fork on an emptied engine: Build, then by hand with the same --cache-from');
      await forgetBuilds(dockerHost, n, [bk.env.IMGBUILDER_BASE_REPOSITORY, bk.env.IMGBUILDER_WORKSPACE_REPOSITORY]);
      const fork = await logged(`fork-${bk.namespace}`, cacheDockerfile(n, 'cold'), `expensive-${n}`);
      // --quick (the CI smoke) leaves out the hand-run side of the fork and the stages: each needs engine prunes.
      const handBranch = (name: string, dockerfile: string) => ctx.git.commit(name, { Dockerfile: dockerfile }, BY_HAND_BRANCH);
      const byHand = async (name: string, dockerfile: string, tag: string, cacheFrom: string[] | string | undefined, marker: string) => {
        if (ctx.quick) return undefined;
        await forgetBuilds(dockerHost, marker, [bk.env.IMGBUILDER_BASE_REPOSITORY, bk.env.IMGBUILDER_WORKSPACE_REPOSITORY, handRepo]);
        handBranch(name, dockerfile);
        return manualBuildkit({ remote: ctx.git.url(name), branch: BY_HAND_BRANCH, tag: `${handRepo}:${tag}`, cacheFrom, push: true, dockerHost });
      };
      const handFork = await byHand(`fork-${bk.namespace}`, cacheDockerfile(n, 'cold'), 'fork', fork.imported, n);

      // Two stages: the builder's heavy first step stays, a later step of it changes.
      ctx.progress('two stages, later builder step changed, emptied engine: Build, then by hand');
      const s = nonce();
      const stagesRepo = `stages-${bk.namespace}`;
      const twoStage = (v: string) => [`FROM ${BASE_IMAGE} AS builder`, `RUN echo heavy-${s} && sleep ${expensiveS}`, `RUN echo later-${s}-${v} > /out`, `FROM ${BASE_IMAGE}`, 'COPY --from=builder /out /out', ''].join('\n');
      const stageCold = await logged(stagesRepo, twoStage('one'), `heavy-${s}`);
      await forgetBuilds(dockerHost, s, [bk.env.IMGBUILDER_BASE_REPOSITORY, bk.env.IMGBUILDER_WORKSPACE_REPOSITORY]);
      const stageWarm = await logged(stagesRepo, twoStage('two'), `heavy-${s}`);
      const handStages = await byHand(stagesRepo, twoStage('three'), 'stages', stageWarm.imported, s);
      // What inline cache alone gives (the service before stage refs): --cache-from the previous final image only.
      const handFinalOnly = await byHand(stagesRepo, twoStage('four'), 'stages-final-only', stageWarm.ownFinal, s);
      if (!ctx.quick) await forgetBuilds(dockerHost, s, [bk.env.IMGBUILDER_BASE_REPOSITORY, bk.env.IMGBUILDER_WORKSPACE_REPOSITORY, handRepo]);

      ctx.progress('parallel stages: BuildKit worker vs classic worker');
      const stages = (k: string) =>
        [`FROM ${BASE_IMAGE} AS one`, `RUN sleep ${stageS} && echo one-${k} > /one`, `FROM ${BASE_IMAGE} AS two`, `RUN sleep ${stageS} && echo two-${k} > /two`, `FROM ${BASE_IMAGE}`, 'COPY --from=one /one /one', 'COPY --from=two /two /two', ''].join('\n');
      const parBk = await timed(bkClient, stages(nonce()));
      const parClassic = await timed(classicClient, stages(nonce()));
      bkClient.close();
      classicClient.close();

      const emptyRatio = svcEmpty / svcCold;
      const parRatio = parBk / parClassic;
      const forkRatio = fork.ms / svcCold;
      const stagesRatio = stageWarm.ms / stageCold.ms;
      const targets = [
        target('emptiedOverCold', emptyRatio, '<=', 0.3),
        target('parallelBuildkitOverClassic', parRatio, '<', 0.65),
        target('forkOverCold', forkRatio, '<=', 0.3),
        target('stagesOverCold', stagesRatio, '<=', 0.3),
      ];
      const cached = (c: boolean) => (c ? 'heavy step CACHED' : 'heavy step RAN');
      const handSide = (hand: number | undefined) => (hand === undefined ? {} : { baseline: { label: 'by hand, same --cache-from', value: hand } });
      const rows: Row[] = [
        { figure: `cold (expensive step ${expensiveS} s): Build → terminal`, value: svcCold, unit: 'ms', baseline: { label: 'by hand', value: handCold }, compare: ratio(svcCold, handCold) },
        { figure: 'warm, same engine (last step changed)', value: svcWarm, unit: 'ms', baseline: { label: 'by hand', value: handWarm }, compare: ratio(svcWarm, handWarm) },
        { figure: 'emptied engine, cache from the registry', value: svcEmpty, unit: 'ms', baseline: { label: 'by hand --cache-from', value: handEmpty }, compare: ratio(svcEmpty, handEmpty) },
        { figure: 'emptied engine ÷ cold (Build)', value: emptyRatio, unit: '', compare: `by hand ${ratio(handEmpty, handCold)}`, target: targetText(targets[0]) },
        { figure: 'fork (same Dockerfile, other repository), emptied engine', value: fork.ms, unit: 'ms', ...handSide(handFork), compare: `${handFork === undefined ? '' : `${ratio(fork.ms, handFork)}; `}${cached(fork.heavyCached)}` },
        { figure: 'fork ÷ original cold (Build)', value: forkRatio, unit: '', compare: `${fork.imported.length} ref(s) imported`, target: targetText(targets[2]) },
        { figure: `two stages, builder's heavy step (${expensiveS} s) kept, later step changed: cold`, value: stageCold.ms, unit: 'ms' },
        { figure: 'two stages, emptied engine (stage refs)', value: stageWarm.ms, unit: 'ms', ...handSide(handStages), compare: `${handStages === undefined ? '' : `${ratio(stageWarm.ms, handStages)}; `}${cached(stageWarm.heavyCached)}` },
        { figure: 'two stages, emptied engine ÷ cold (Build)', value: stagesRatio, unit: '', compare: handFinalOnly === undefined ? '' : `by hand, final image only (inline cache alone): ${ratio(handFinalOnly, stageCold.ms)} of cold`, target: targetText(targets[3]) },
        { figure: `two independent ${stageS} s stages: BuildKit worker`, value: parBk, unit: 'ms', baseline: { label: 'classic worker', value: parClassic }, compare: ratio(parBk, parClassic), target: targetText(targets[1]) },
      ];
      return {
        params: { expensiveSeconds: expensiveS, stageSeconds: stageS },
        metrics: {
          svcCold, svcWarm, svcEmpty, handCold, handWarm, handEmpty, emptiedOverCold: emptyRatio, parallelBuildkit: parBk, parallelClassic: parClassic, parallelBuildkitOverClassic: parRatio,
          svcFork: fork.ms, ...(handFork === undefined ? {} : { handFork }), forkOverCold: forkRatio, forkHeavyCached: Number(fork.heavyCached),
          svcStagesCold: stageCold.ms, svcStagesEmptied: stageWarm.ms, ...(handStages === undefined ? {} : { handStages }), ...(handFinalOnly === undefined ? {} : { handStagesFinalOnly: handFinalOnly }), stagesOverCold: stagesRatio, stagesHeavyCached: Number(stageWarm.heavyCached),
        },
        rows,
        targets,
        notes: [
          'Build times run from the call to the terminal status: clone, build, push of the base image and of the workspace image, and (BuildKit) the cache-ref check and push. By hand: clone, build, push of the image.',
          'Emptied engine: only the BuildKit cache records of that source and its images are removed (the engine is shared): the base image stays, as on any worker that has built before.',
          'Fork and two stages: by hand posts the same Dockerfile with --cache-from the refs the service imported (its log says which); "final image only" is what inline cache gave before stage refs: --cache-from the previous final image alone.',
        ],
      };
    } finally {
      await Promise.all([classic.close(), bk.close()]);
    }
  },
};
