import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BuildStatus, type ImageBuilderClient } from '@imgbuilder/proto';
import { describeProfile, newestProfile, profileClockUs, summarizeProfile, type ProfileSummary } from '../support/cpu-profile.js';
import { Gate } from '../../testkit/gate.js';
import { clients, logsStream, ownClient, startBuild, waitReady, wallMs } from '../support/grpc.js';
import { rssMiB, rssSampler } from '../support/proc.js';
import { fmt, ratio, target, targetText, type Row } from '../support/report.js';
import { benchStack, readEvents, type BenchStack } from '../support/stack.js';
import { p50, p99 } from '../support/stats.js';
import { commitSource, nonce, tickDockerfile, ticksIn } from '../support/workloads.js';
import type { BenchContext, Scenario } from './context.js';

const TICK_INTERVAL_US = 100_000;
const S3_POLL_MS = 100;

interface RunResult {
  subscribers: number;
  ticks: number;
  /** RUN step print → Logs client receipt, over every (tick, subscriber). */
  e2e: number[];
  /** Redis XADD (stream id ms) → Logs client receipt. */
  redisToClient: number[];
  /** RUN step print → Redis XADD, per tick (independent of subscribers). */
  printToRedis: number[];
  /** RUN step print → first poll of the presigned log URL that shows the line. */
  printToS3: number[];
  rssIdleMiB: number;
  rssPeakMiB: number;
  attachMs: number;
  missing: number;
}

/**
 * Scenario 4. A build whose RUN step prints `tick <µs>` every 100 ms (busybox `adjtimex` gives the wall clock in µs;
 * its `date` has no %N). A TCP gate holds the build before the ticks until every subscriber is attached. Measured
 * per line: print → received by each Logs client (end to end), split at the Redis XADD (the stream entry's id
 * carries Redis's ms clock): print → XADD (engine → worker → Redis) and XADD → client (Redis → API fan-out → gRPC).
 * All three clocks are this host's CLOCK_REALTIME. Run once with 1 subscriber (the baseline) and once with many,
 * all on one API process; the API's VmRSS is sampled throughout. The 1-subscriber run also polls the presigned
 * log URL to time print → line present in the S3 object.
 */
export const logLatencyScenario: Scenario = {
  name: 'log-latency',
  title: 'Log latency and fan-out',
  async run(ctx) {
    const many = ctx.quick ? 5 : 500;
    const ticks = ctx.quick ? 10 : 50;
    // Classic builder: it hands each printed line to the worker at once; BuildKit batches and rate-limits step output
    // in the engine, which would measure the engine rather than the service's log path.
    const stack = await benchStack({ apis: 1, workers: 1, env: { IMGBUILDER_BUILDER: 'classic' } });
    try {
      const one = await measure(ctx, stack, 1, ticks);
      const fan = await measure(ctx, stack, many, ticks);
      const m = {
        subscribers: many,
        ticks,
        e2eP50Ms1: p50(one.e2e),
        e2eP99Ms1: p99(one.e2e),
        e2eP50Ms: p50(fan.e2e),
        e2eP99Ms: p99(fan.e2e),
        redisToClientP50Ms1: p50(one.redisToClient),
        redisToClientP99Ms1: p99(one.redisToClient),
        redisToClientP50Ms: p50(fan.redisToClient),
        redisToClientP99Ms: p99(fan.redisToClient),
        printToRedisP50Ms: p50([...one.printToRedis, ...fan.printToRedis]),
        printToRedisP99Ms: p99([...one.printToRedis, ...fan.printToRedis]),
        printToS3P50Ms: p50(one.printToS3),
        printToS3P99Ms: p99(one.printToS3),
        rssIdleMiB: one.rssIdleMiB,
        rssPeakMiB1: one.rssPeakMiB,
        rssPeakMiB: fan.rssPeakMiB,
        attachMs: fan.attachMs,
        linesMissing: one.missing + fan.missing,
      };
      const tP99 = target('e2eP99Ms', m.e2eP99Ms, '<', 50);
      const tRss = target('rssPeakMiB', m.rssPeakMiB, '<', 300);
      const rows: Row[] = [
        { figure: `print → Logs client, ${many} subscribers: p50`, value: m.e2eP50Ms, unit: 'ms', baseline: { label: '1 subscriber', value: m.e2eP50Ms1 }, compare: ratio(m.e2eP50Ms, m.e2eP50Ms1) },
        { figure: `print → Logs client, ${many} subscribers: p99`, value: m.e2eP99Ms, unit: 'ms', baseline: { label: '1 subscriber', value: m.e2eP99Ms1 }, compare: ratio(m.e2eP99Ms, m.e2eP99Ms1), target: targetText(tP99, 'ms') },
        { figure: `  of which Redis XADD → client, ${many} subscribers: p99`, value: m.redisToClientP99Ms, unit: 'ms', baseline: { label: '1 subscriber p99', value: m.redisToClientP99Ms1 }, compare: `p50 ${fmt(m.redisToClientP50Ms, 'ms')} (1 sub: ${fmt(m.redisToClientP50Ms1, 'ms')})` },
        { figure: '  of which print → Redis XADD (worker): p99', value: m.printToRedisP99Ms, unit: 'ms', compare: `p50 ${fmt(m.printToRedisP50Ms, 'ms')}` },
        { figure: 'print → line in the S3 log object: p99', value: m.printToS3P99Ms, unit: 'ms', compare: `p50 ${fmt(m.printToS3P50Ms, 'ms')}; polled every ${S3_POLL_MS} ms` },
        { figure: `API VmRSS with ${many} subscribers (peak)`, value: m.rssPeakMiB, unit: 'MiB', baseline: { label: '1 subscriber', value: m.rssPeakMiB1 }, compare: `idle ${fmt(m.rssIdleMiB, 'MiB')}`, target: targetText(tRss, 'MiB') },
      ];
      const notes = [
        `${ticks} tick lines 100 ms apart; ${many} Logs subscribers by build_id on ${Math.min(many, 10)} connections to one API process; all attached before the first tick (attach took ${fmt(m.attachMs, 'ms')}).`,
        'Clocks: tick = kernel wall clock read in the RUN container (adjtimex, µs); XADD = Redis stream id (ms, floor); receipt = bench wall clock. Same host, same clock.',
        'The receipt time includes the bench client\'s own event-loop delay (it decodes every subscriber\'s messages on one thread).',
        `print → S3 polls the presigned GET URL every ${S3_POLL_MS} ms in the 1-subscriber run (the worker rewrites the object every 2 s).`,
        `Lines a subscriber never received: ${m.linesMissing}.`,
      ];
      let profile: ProfileSummary | undefined;
      if (ctx.cpuProf || !tP99.met || !tRss.met) {
        ctx.progress('profiling the API (node --cpu-prof) under the same fan-out');
        const dir = join(ctx.artefactDir, 'cpu-profile');
        const api = await stack.startProfiledApi(dir);
        const fromUs = profileClockUs();
        await measure(ctx, stack, many, ticks, stack.apis.indexOf(api));
        const toUs = profileClockUs();
        await Promise.race([api.kill('SIGTERM'), sleep(15_000)]);
        const file = newestProfile(dir);
        profile = file ? summarizeProfile(file, { fromUs, toUs }) : undefined;
        if (profile) notes.push('Target missed or --cpu-prof: profiled a second API process serving the same fan-out.', ...describeProfile(profile));
      }
      return { params: { subscribers: many, ticks, tickIntervalMs: TICK_INTERVAL_US / 1000 }, metrics: m, rows, targets: [tP99, tRss], notes, breakdown: profile ? { profile } : undefined };
    } finally {
      await stack.close();
    }
  },
};

async function measure(ctx: BenchContext, stack: BenchStack, subscribers: number, ticks: number, apiIndex = 0): Promise<RunResult> {
  ctx.progress(`${subscribers} subscriber(s), ${ticks} lines`);
  const gate = await Gate.start();
  const apiPid = stack.apis[apiIndex].child.pid!;
  const addr = stack.apiAddrs[apiIndex];
  const builder = ownClient(addr);
  const subClients: ImageBuilderClient[] = await clients([addr], Math.min(subscribers, 10));
  await waitReady(builder);
  try {
    const repo = `logs-${stack.namespace}`;
    const source = commitSource(ctx.git.url(repo), ctx.git.commit(repo, { Dockerfile: tickDockerfile(nonce(), ticks, TICK_INTERVAL_US, gate) }));
    const rssIdleMiB = rssMiB(apiPid);
    const call = startBuild(builder, { source });
    const first = await call.first;
    const buildId = first.info?.buildId ?? '';
    const logUrl = first.info?.logInfo?.url ?? '';

    // Per subscriber: [tick print ms, receipt ms] pairs; parsing is a regex per message, cheap next to decoding.
    const received: [number, number][][] = Array.from({ length: subscribers }, () => []);
    const firstChunk: Promise<void>[] = [];
    const streams = Array.from({ length: subscribers }, (_, i) => {
      let resolveFirst!: () => void;
      firstChunk.push(new Promise<void>((r) => (resolveFirst = r)));
      return logsStream(subClients[i % subClients.length], buildId, (text, at) => {
        resolveFirst();
        for (const t of ticksIn(text)) received[i].push([t, at]);
      });
    });
    const t0 = Date.now();
    await Promise.race([Promise.all(firstChunk), sleep(120_000).then(() => Promise.reject(new Error('subscribers did not attach within 120 s')))]);
    const attachMs = Date.now() - t0;
    const rss = rssSampler(apiPid);
    const s3 = subscribers === 1 && logUrl ? pollLogObject(logUrl) : undefined;
    gate.open();

    const { msg } = await call.done;
    if (msg.status !== BuildStatus.done_success) throw new Error(`tick build failed: ${msg.message}`);
    await Promise.race([Promise.allSettled(streams.map((s) => s.ended)), sleep(60_000)]);
    const rssPeakMiB = rss.stop();
    const printToS3 = s3 ? await s3.stop() : [];

    const xaddAt = new Map<number, number>();
    for (const { ms, event: e } of await readEvents(stack.redis, stack.namespace, buildId)) if (e.kind === 'log') for (const t of ticksIn(e.text)) xaddAt.set(t, ms);
    const printToRedis = [...xaddAt.entries()].map(([t, ms]) => ms - t);
    const e2e: number[] = [];
    const redisToClient: number[] = [];
    let missing = 0;
    for (const r of received) {
      missing += xaddAt.size - r.length;
      for (const [t, at] of r) {
        e2e.push(at - t);
        const x = xaddAt.get(t);
        if (x !== undefined) redisToClient.push(at - x);
      }
    }
    return { subscribers, ticks: xaddAt.size, e2e, redisToClient, printToRedis, printToS3, rssIdleMiB, rssPeakMiB, attachMs, missing };
  } finally {
    await gate.close();
    builder.close();
    for (const c of subClients) c.close();
  }
}

/** Polls the presigned log URL; `stop()` returns, per tick line, first-seen time minus print time (ms). */
function pollLogObject(url: string): { stop(): Promise<number[]> } {
  const seen = new Map<number, number>();
  let running = true;
  const look = async () => {
    const t = wallMs();
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
      if (res.ok) for (const tick of ticksIn(await res.text())) if (!seen.has(tick)) seen.set(tick, t);
    } catch {
      /* not there yet, or s3rver busy: the next poll tries again */
    }
  };
  const loop = (async () => {
    while (running) {
      await look();
      await sleep(S3_POLL_MS);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      // One more look: the final upload completes before the terminal status, and a build shorter than the worker's
      // upload interval may have had no poll between that upload and its end.
      await look();
      return [...seen.entries()].map(([tick, at]) => at - tick);
    },
  };
}

