import { BuildStatus } from '@imgbuilder/proto';
import { BASE_IMAGE } from '../../testkit/requests.js';
import { S3PutCounter } from '../../testkit/s3-counter.js';
import { clients, startBuild } from '../support/grpc.js';
import { rssMiB, rssSampler } from '../support/proc.js';
import { fmt, ratio, target, type Row, type Target } from '../support/report.js';
import { benchStack } from '../support/stack.js';
import { commitSource, nonce } from '../support/workloads.js';
import type { BenchContext, Scenario } from './context.js';

const MiB = 1024 * 1024;
/** Every printed line is this long (newline included): `log-volume 0000001 ` and padding. */
const LINE_BYTES = 50;

/** Lines per burst of the paced step (250 KB): Docker 20.10's BuildKit gets stuck now and then when over 1 MiB piles up at once. */
const BURST_LINES = 5_000;

/**
 * Scenario: a build step printing a lot (issue 21). One RUN step prints N numbered 50-byte lines (20 MB, 400,000 in
 * the full run), in bursts of BURST_LINES 20 ms apart; baseline: the same step with its output sent to /dev/null, in
 * the same run. Per builder: wall time of the Build call, completeness (every numbered line in the log object, in
 * order), worker RSS growth (peak during the build minus before it), and the bytes PUT to the log object, counted by
 * a proxy in front of the local s3rver. Under BuildKit also the same output in one burst (whether the engine gets
 * through it); per builder a log beyond IMGBUILDER_LOG_MAX_BYTES: the cap line, and the build still ends done_success.
 */
export const logVolumeScenario: Scenario = {
  name: 'log-volume',
  title: 'A step printing 20 MB (400,000 lines): time, completeness, worker memory, upload volume',
  async run(ctx) {
    const lines = ctx.quick ? 20_000 : 400_000;
    const capBytes = ctx.quick ? 2 * MiB : 64 * MiB;
    const s3 = await S3PutCounter.start(ctx.env.IMGBUILDER_S3_ENDPOINT);
    const m: Record<string, number> = { lines, logMB: (lines * LINE_BYTES) / 1e6, capMiB: capBytes / MiB };
    const rows: Row[] = [];
    const targets: Target[] = [];
    const notes = [
      `One RUN step: busybox awk prints ${lines} numbered ${LINE_BYTES}-byte lines in bursts of ${BURST_LINES} lines 20 ms apart; the baseline sends the same output to /dev/null. Time: the Build call, request to terminal status.`,
      'Completeness: every number 1..N found, in order, in the log object (read through its presigned URL). RSS: the worker process, sampled every 100 ms, peak minus before the build.',
      "Upload volume: body bytes of every PUT (objects and multipart parts) to the build's log key, counted by a proxy in front of the local s3rver.",
    ];
    try {
      // The quick run (the bench smoke test) only proves the scenario runs: BuildKit, no burst.
      for (const builder of ctx.quick ? (['buildkit'] as const) : (['buildkit', 'classic'] as const)) {
        const r = await measure(ctx, s3, builder, lines, capBytes);
        Object.assign(m, prefixed(builder, r));
        const t = [
          target(`${builder}.loudMs`, r.loudMs, '<=', 1.3 * r.quietMs + 2000),
          target(`${builder}.missingLines`, r.missingLines, '==', 0),
          target(`${builder}.rssGrowthMiB`, r.rssGrowthMiB, '<=', 200),
          target(`${builder}.putRatio`, r.putRatio, '<=', 3),
        ];
        if (!ctx.quick) targets.push(...t);
        rows.push(
          { figure: `${builder}: build printing ${fmt(m.logMB, 'MB')} (${lines} lines)`, value: r.loudMs / 1000, unit: 's', baseline: { label: 'printing nothing', value: r.quietMs / 1000 }, compare: ratio(r.loudMs, r.quietMs), target: '≤ 1.3× + 2 s' },
          { figure: `${builder}: lines missing from the log object`, value: r.missingLines, unit: '', compare: `${r.foundLines} of ${lines} found`, target: '0' },
          { figure: `${builder}: worker RSS growth during the build`, value: r.rssGrowthMiB, unit: 'MiB', baseline: { label: 'printing nothing', value: r.quietRssGrowthMiB }, target: '≤ 200 MiB' },
          { figure: `${builder}: bytes PUT for the log object / its final size`, value: r.putRatio, unit: '×', compare: `${fmt(r.putMiB, 'MiB')} for ${fmt(r.objectMiB, 'MiB')}`, target: '≤ 3×' },
        );
        if (builder === 'buildkit' && !ctx.quick) {
          rows.push({ figure: `buildkit: the same ${fmt(m.logMB, 'MB')} in one burst`, value: r.burstMs / 1000, unit: 's', compare: r.burstOk ? 'done_success' : `FAILED: ${r.burstMessage.slice(0, 80)}` });
          if (!r.burstOk) notes.push(`buildkit, one burst: ${r.burstMessage}`);
        }
        rows.push({ figure: `${builder}: log beyond the ${m.capMiB} MiB cap`, value: r.capOk, unit: '', compare: r.capOk ? 'cap line, done_success' : `cap line or done_success MISSING ${r.capMessage.slice(0, 60)}`, target: '1' });
        if (!ctx.quick) targets.push(target(`${builder}.capOk`, r.capOk, '==', 1));
        if (!r.loudOk) notes.push(`${builder}: the build printing ${lines} lines failed: ${r.loudMessage}`);
      }
    } finally {
      await s3.stop();
    }
    return {
      params: { lines, lineBytes: LINE_BYTES, capBytes },
      metrics: m,
      rows,
      targets,
      notes,
    };
  },
};

interface BuilderFigures {
  quietMs: number;
  loudMs: number;
  foundLines: number;
  missingLines: number;
  quietRssGrowthMiB: number;
  rssGrowthMiB: number;
  objectMiB: number;
  putMiB: number;
  putRatio: number;
  capOk: number;
  capMessage: string;
  loudOk: boolean;
  loudMessage: string;
  burstMs: number;
  burstOk: boolean;
  burstMessage: string;
}

async function measure(ctx: BenchContext, s3: S3PutCounter, builder: 'buildkit' | 'classic', lines: number, capBytes: number): Promise<BuilderFigures> {
  const stack = await benchStack({ apis: 1, workers: 1, env: { IMGBUILDER_S3_ENDPOINT: s3.endpoint, IMGBUILDER_BUILDER: builder, IMGBUILDER_LOG_MAX_BYTES: String(capBytes) } });
  const [client] = await clients(stack.apiAddrs, 1);
  const workerPid = stack.workers[0].child.pid!;
  const repo = `log-volume-${stack.namespace}`;
  const run = async (label: string, dockerfile: string, timeoutMs = 600_000) => {
    ctx.progress(`${builder}: ${label}`);
    const source = commitSource(ctx.git.url(repo), ctx.git.commit(repo, { Dockerfile: dockerfile }));
    const rssBefore = rssMiB(workerPid);
    const rss = rssSampler(workerPid);
    const t0 = Date.now();
    const call = startBuild(client, { source }, timeoutMs);
    const [first, { msg, at }] = await Promise.all([call.first, call.done]);
    const rssGrowthMiB = rss.stop() - rssBefore;
    const buildId = first.info?.buildId ?? '';
    const res = await fetch(first.info?.logInfo?.url ?? '');
    const text = Buffer.from(await res.arrayBuffer());
    return { ms: at - t0, ok: msg.status === BuildStatus.done_success, message: msg.message, rssGrowthMiB, text, putBytes: s3.putBytes(`/logs/${buildId}.log`) };
  };
  try {
    // Lines 1..n; `paced`: in bursts of BURST_LINES, 20 ms apart.
    const print = (n: number, paced = true) =>
      paced
        ? `awk 'BEGIN { for (i = 1; i <= ${n}; i++) { printf "log-volume %07d padding-padding-padding-paddin\\n", i; if (i % ${BURST_LINES} == 0) { fflush(); system("sleep 0.02") } } }'`
        : `awk 'BEGIN { for (i = 1; i <= ${n}; i++) printf "log-volume %07d padding-padding-padding-paddin\\n", i }'`;
    const quiet = await run('quiet build', `FROM ${BASE_IMAGE}\nRUN echo ${nonce()} && ${print(lines)} >/dev/null\n`);
    if (!quiet.ok) throw new Error(`${builder}: the quiet build failed: ${quiet.message}`);
    const loud = await run(`${lines} lines`, `FROM ${BASE_IMAGE}\nRUN echo ${nonce()} && ${print(lines)}\n`);
    const found = numberedLines(loud.text.toString('utf8'));
    let burst = { ms: NaN, ok: false, message: '' };
    if (builder === 'buildkit' && !ctx.quick) burst = await run(`${lines} lines in one burst`, `FROM ${BASE_IMAGE}\nRUN echo ${nonce()} && ${print(lines, false)}\n`);
    const capped = await run(`beyond the ${capBytes / MiB} MiB cap`, `FROM ${BASE_IMAGE}\nRUN echo ${nonce()} && ${print(Math.ceil((capBytes * 1.1) / LINE_BYTES))}\n`);
    const tail = capped.text.subarray(-1024).toString('utf8');
    const capOk = capped.ok && capped.text.length <= capBytes + 1024 && /log truncated: .*IMGBUILDER_LOG_MAX_BYTES/.test(tail) ? 1 : 0;
    return {
      quietMs: quiet.ms,
      loudMs: loud.ms,
      foundLines: found,
      missingLines: lines - found,
      quietRssGrowthMiB: quiet.rssGrowthMiB,
      rssGrowthMiB: loud.rssGrowthMiB,
      objectMiB: loud.text.length / MiB,
      putMiB: loud.putBytes / MiB,
      putRatio: loud.putBytes / Math.max(1, loud.text.length),
      capOk,
      capMessage: capped.message,
      loudOk: loud.ok,
      loudMessage: loud.message,
      burstMs: burst.ms,
      burstOk: burst.ok,
      burstMessage: burst.message,
    };
  } finally {
    client.close();
    await stack.close();
  }
}

/** How many of the numbered lines 1, 2, … appear in order (the count up to the first one missing). */
function numberedLines(log: string): number {
  let next = 1;
  for (const m of log.matchAll(/log-volume (\d{7}) padding/g)) if (Number(m[1]) === next) next++;
  return next - 1;
}

/** The numeric figures (outcomes as 0/1), named `<builder>.<figure>`; texts and figures not measured stay out. */
function prefixed(prefix: string, figures: BuilderFigures): Record<string, number> {
  const numeric = Object.entries(figures).flatMap(([k, v]): [string, number][] => (typeof v === 'boolean' ? [[k, v ? 1 : 0]] : typeof v === 'number' && Number.isFinite(v) ? [[k, v]] : []));
  return Object.fromEntries(numeric.map(([k, v]) => [`${prefix}.${k}`, v]));
}
