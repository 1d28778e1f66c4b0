import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BuildStatus, type BuildSource } from '@imgbuilder/proto';
import { describeProfile, newestProfile, profileClockUs, summarizeProfile, type ProfileSummary } from '../support/cpu-profile.js';
import { Gate } from '../../testkit/gate.js';
import { healthCheck, ownClient, startBuild, waitReady, type BuildCall } from '../support/grpc.js';
import { summarizeHeapSnapshot, type HeapGroup, type HeapSummary } from '../support/heap-snapshot.js';
import { rssMiB, rssSampler } from '../support/proc.js';
import { fmt, target, targetText, type Row } from '../support/report.js';
import { benchStack } from '../support/stack.js';
import type { StreamClientOrder, StreamClientReport } from '../support/stream-clients.js';
import { commitSource, nonce } from '../support/workloads.js';
import { BASE_IMAGE } from '../../testkit/requests.js';
import type { Scenario } from './context.js';

const CLIENT_PROCESSES = 2;
/** Per client process; Gitpod's server pods are a few callers with many streams each. */
const CONNECTIONS_PER_PROCESS = 4;
const OPEN_TIMEOUT_MS = 300_000;
const DONE_TIMEOUT_MS = 300_000;
/** After the last stream opened, RSS is sampled this long (the opening burst's garbage is collected meanwhile). */
const SETTLE_MS = 5_000;

/**
 * Scenario `streams` (issue 23). One API process holds many open streams: 80 % Logs, 20 % Build, spread over a few
 * builds held at a TCP gate, the clients in forked processes so the client side does not limit. Measured: the API's
 * VmRSS before the first stream and once all are open (settled, and the peak while they opened), per stream. Then
 * the gate opens, the builds end, and every stream must end complete: Build with `done_success`, Logs with the
 * build's last line and OK. With --heap-snapshot the API writes a heap snapshot idle and with every stream open, and
 * the report lists what grew, per stream.
 */
export const streamsScenario: Scenario = {
  name: 'streams',
  title: 'Open streams on one API process: memory per stream',
  async run(ctx) {
    // BENCH_STREAMS=n scales the run (n streams, same mix) for a look at a smaller or bigger process.
    const total = Number(process.env.BENCH_STREAMS) || (ctx.quick ? 100 : 10_000);
    const builds = total < 1_000 ? 1 : 4;
    const buildStreams = Math.round(total / 5);
    const logsStreams = total - buildStreams;
    const snapshotDir = join(ctx.artefactDir, 'heap');
    if (ctx.heapSnapshot) mkdirSync(snapshotDir, { recursive: true });
    // Build limits off (no cgroup root, so no watch on the engine's BuildKit steps): a build held minutes at the gate
    // on a shared engine fails when another client's BuildKit step starts meanwhile (the worker cannot hold an
    // unmarked step to any build's limits). This scenario is about the API.
    const noLimits = { IMGBUILDER_BUILD_LIMITS: 'off', IMGBUILDER_BUILD_CGROUP_ROOT: '/nonexistent/imgbuilder-bench-streams' };
    const stack = await benchStack({ apis: 0, workers: 1, env: { IMGBUILDER_WORKER_CONCURRENCY: String(builds), ...noLimits } });
    const gate = await Gate.start();
    const children: ChildProcess[] = [];
    const starts: BuildCall[] = [];
    let reasserting: NodeJS.Timeout | undefined;
    try {
      const profileDir = join(ctx.artefactDir, 'cpu-profile');
      // (--cpu-prof is not allowed in NODE_OPTIONS, --heapsnapshot-signal is.)
      if (ctx.heapSnapshot) stack.env.NODE_OPTIONS = `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${snapshotDir}`;
      const api = ctx.cpuProf ? await stack.startProfiledApi(profileDir) : await stack.startApi();
      const addr = stack.apiAddrs[0];
      const pid = api.child.pid!;
      const c = ownClient(addr);
      await waitReady(c);
      // One call of every kind first, so the idle figure includes what the first call loads (code, pools, caches).
      await healthCheck(c);
      // Writing a snapshot grows the heap itself: the idle one is taken before the idle figure.
      const idleSnap = ctx.heapSnapshot ? await heapSnapshot(snapshotDir, pid, c) : undefined;
      const rssIdleMiB = rssMiB(pid);

      const repo = `streams-${stack.namespace}`;
      const plans = Array.from({ length: builds }, () => {
        const n = nonce();
        const source = commitSource(ctx.git.url(repo), ctx.git.commit(repo, { Dockerfile: gatedDockerfile(n, gate) }));
        return { source, lastLine: `streams-2-done ${n}` };
      });
      const rss = rssSampler(pid);
      const t0 = Date.now();
      const fromUs = profileClockUs();
      // The first Build of each source creates its build (and tells its id); every other Build call joins it.
      starts.push(...plans.map((p) => startBuild(c, { source: p.source }, OPEN_TIMEOUT_MS + DONE_TIMEOUT_MS)));
      const ids = await Promise.all(starts.map(async (s) => (await s.first).info?.buildId ?? ''));
      if (ids.some((id) => !id)) throw new Error('a first Build message carried no build id');
      const orders = clientOrders(addr, plans, ids, buildStreams - builds, logsStreams);
      const reports = orders.map((order) => {
        const child = fork(join(import.meta.dirname, '../support/stream-clients.ts'), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' });
        children.push(child);
        const opened = nextReport(child, 'open');
        const done = nextReport(child, 'done');
        child.send(order);
        return { opened, done };
      });
      await withTimeout(Promise.all(reports.map((r) => r.opened)), OPEN_TIMEOUT_MS, `not every stream opened within ${OPEN_TIMEOUT_MS / 1000} s`);
      const openMs = Date.now() - t0;
      ctx.progress(`${total} streams open after ${fmt(openMs / 1000, 's')}; settling ${SETTLE_MS / 1000} s`);
      await sleep(SETTLE_MS);
      const rssOpenMiB = rssMiB(pid);
      const rssPeakMiB = rss.stop();
      const openSnap = ctx.heapSnapshot ? await heapSnapshot(snapshotDir, pid, c) : undefined;
      // The builds' ends go out to every stream at once: that peak counts too (a heap snapshot's own growth does not).
      const rssEnd = rssSampler(pid);

      gate.open();
      const t1 = Date.now();
      // Until the builds end: another process on the machine may have replaced the gate's egress exception.
      const reassert = () => void gate.reassert().catch(() => undefined);
      reassert();
      reasserting = setInterval(reassert, 5_000);
      const allDone = Promise.all([Promise.all(starts.map((s) => s.done.catch(() => undefined))), Promise.all(reports.map((r) => r.done))]);
      const ended = await Promise.race([allDone, sleep(DONE_TIMEOUT_MS).then(() => undefined)]);
      const endMs = Date.now() - t1;
      if (!ended) {
        ctx.progress(`not every stream ended within ${DONE_TIMEOUT_MS / 1000} s of the gate opening; counting what did`);
        for (const child of children) child.send('report');
      }
      const [firsts, done] = ended ?? (await withTimeout(allDone, 30_000, 'the stream clients did not report'));
      clearInterval(reasserting);
      const rssEndPeakMiB = rssEnd.stop();
      const toUs = profileClockUs();
      c.close();
      let profile: ProfileSummary | undefined;
      if (ctx.cpuProf) {
        // Node writes the profile when the process exits on its own (SIGTERM: a graceful stop).
        await Promise.race([api.kill('SIGTERM'), sleep(15_000)]);
        const file = newestProfile(profileDir);
        profile = file ? summarizeProfile(file, { fromUs, toUs }) : undefined;
      }
      const firstsOk = firsts.filter((f) => f?.msg.status === BuildStatus.done_success).length;
      const m = {
        streams: total,
        buildStreams,
        logsStreams,
        builds,
        rssIdleMiB,
        rssOpenMiB,
        rssPeakMiB,
        rssEndPeakMiB,
        growthMiB: rssOpenMiB - rssIdleMiB,
        // The target holds over the whole run: opening, holding, and every stream ending at once.
        peakGrowthMiB: Math.max(rssPeakMiB, rssEndPeakMiB) - rssIdleMiB,
        kbPerStream: ((rssOpenMiB - rssIdleMiB) * 1024) / total,
        peakKbPerStream: ((Math.max(rssPeakMiB, rssEndPeakMiB) - rssIdleMiB) * 1024) / total,
        endPeakGrowthMiB: rssEndPeakMiB - rssIdleMiB,
        openMs,
        endMs: ended ? endMs : NaN,
        pending: done.reduce((n, d) => n + d.pending, 0),
        completed: firstsOk + done.reduce((n, d) => n + d.buildOk + d.logsOk, 0),
        failures: builds - firstsOk + done.reduce((n, d) => n + d.failures + d.pending, 0),
      };
      const tKb = target('peakKbPerStream', m.peakKbPerStream, '<=', 50);
      const tGrowth = target('peakGrowthMiB', m.peakGrowthMiB, '<=', 500);
      const tFail = target('failures', m.failures, '==', 0);
      const rows: Row[] = [
        { figure: `API VmRSS, ${total} streams open (settled)`, value: m.rssOpenMiB, unit: 'MiB', baseline: { label: 'idle', value: m.rssIdleMiB }, compare: `+${fmt(m.growthMiB, 'MiB')}` },
        { figure: 'API VmRSS growth, peak while opening', value: m.rssPeakMiB - m.rssIdleMiB, unit: 'MiB', compare: `peak ${fmt(m.rssPeakMiB, 'MiB')}` },
        { figure: 'API VmRSS growth, peak while the builds end', value: m.endPeakGrowthMiB, unit: 'MiB', compare: `peak ${fmt(m.rssEndPeakMiB, 'MiB')}` },
        { figure: 'API VmRSS growth, peak of the run', value: m.peakGrowthMiB, unit: 'MiB', target: targetText(tGrowth, 'MiB') },
        { figure: 'API memory per open stream (peak growth / streams)', value: m.peakKbPerStream, unit: 'KB', compare: `settled, all open: ${fmt(m.kbPerStream, 'KB')}`, target: targetText(tKb, 'KB') },
        { figure: 'time to open every stream', value: m.openMs / 1000, unit: 's' },
        { figure: 'gate opened → every stream ended', value: m.endMs / 1000, unit: 's' },
        { figure: 'streams ended incomplete or with an error', value: m.failures, unit: '', compare: `${m.completed} of ${total} complete, ${m.pending} never ended`, target: targetText(tFail, '') },
      ];
      const samples = [...new Set(done.flatMap((d) => d.failureSamples))];
      const notes = [
        `${logsStreams} Logs and ${buildStreams} Build streams on ${builds} build(s) held at a gate, from ${CLIENT_PROCESSES} client processes × ${CONNECTIONS_PER_PROCESS} connections (opened 250 at a time per process), to one API process; VmRSS idle (after one call), ${SETTLE_MS / 1000} s after the last stream opened, and its peak meanwhile.`,
        'Complete: a Build stream ends with done_success; a Logs stream ends OK after the build\'s last line.',
        ...(samples.length ? [`Failures (samples): ${samples.join(' | ')}`] : []),
      ];
      let breakdown: Record<string, unknown> | undefined = profile ? { profile } : undefined;
      if (profile) notes.push('--cpu-prof: the API profiled from the first stream to the last stream\'s end.', ...describeProfile(profile));
      if (idleSnap && openSnap) {
        const grew = heapGrowth(idleSnap, openSnap, total);
        breakdown = { ...breakdown, heapIdle: idleSnap, heapOpen: openSnap, heapGrowthPerStream: grew };
        notes.push(`Live JS heap: idle ${fmt(idleSnap.totalBytes / 2 ** 20, 'MiB')}, open ${fmt(openSnap.totalBytes / 2 ** 20, 'MiB')} (${fmt((openSnap.totalBytes - idleSnap.totalBytes) / 1024 / total, 'KB')} per stream); biggest growth per stream:`);
        for (const g of grew.slice(0, 15)) notes.push(`  ${fmt(g.bytes / 1024, 'KB')}  ${g.count.toFixed(1)} × ${g.what}`);
      }
      return { params: { streams: total, buildStreams, logsStreams, builds, clientProcesses: CLIENT_PROCESSES, connections: CLIENT_PROCESSES * CONNECTIONS_PER_PROCESS }, metrics: m, rows, targets: [tKb, tGrowth, tFail], notes, breakdown };
    } finally {
      clearInterval(reasserting);
      gate.open();
      for (const s of starts) s.cancel();
      for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
      await gate.close();
      await stack.close();
    }
  },
};

/**
 * A build that waits at the gate, then prints its last line (unlike its command's text). Only "go" opens it: on a
 * loaded machine `nc` times out now and then, which must not end the wait early. Bounded: 10 minutes.
 */
function gatedDockerfile(n: string, gate: { host: string; port: number }): string {
  return [
    `FROM ${BASE_IMAGE}`,
    `RUN echo "streams ${n}"`,
    `RUN end=$(($(date +%s)+600)); while [ $(date +%s) -lt $end ]; do r=$(nc -w 2 ${gate.host} ${gate.port} </dev/null); [ "$r" = go ] && break; usleep 100000; done; echo "gate: $r"`,
    `RUN echo "streams-$((1+1))-done ${n}"`,
    '',
  ].join('\n');
}

/** Splits the streams over the client processes, per build; the Build streams already open (one per build) count. */
function clientOrders(addr: string, plans: { source: BuildSource; lastLine: string }[], ids: string[], buildStreams: number, logsStreams: number): StreamClientOrder[] {
  const share = (count: number, slot: number, slots: number) => Math.floor(count / slots) + (slot < count % slots ? 1 : 0);
  const slots = plans.length * CLIENT_PROCESSES;
  return Array.from({ length: CLIENT_PROCESSES }, (_, p) => ({
    addr,
    connections: CONNECTIONS_PER_PROCESS,
    builds: plans.map((plan, b) => ({
      ...plan,
      buildId: ids[b],
      buildStreams: share(buildStreams, b * CLIENT_PROCESSES + p, slots),
      logsStreams: share(logsStreams, b * CLIENT_PROCESSES + p, slots),
    })),
  }));
}

/** The child's next report of a type; rejects when it fails or exits first (handled: awaited later, maybe never). */
function nextReport<T extends StreamClientReport['type']>(child: ChildProcess, type: T): Promise<Extract<StreamClientReport, { type: T }>> {
  const p = new Promise<Extract<StreamClientReport, { type: T }>>((resolve, reject) => {
    const onMessage = (r: StreamClientReport) => {
      if (r.type === 'error') reject(new Error(`stream client: ${r.message}`));
      else if (r.type === type) resolve(r as Extract<StreamClientReport, { type: T }>);
    };
    child.on('message', onMessage);
    child.once('exit', (code, signal) => reject(new Error(`stream client exited (${code ?? signal}) before reporting ${type}`)));
  });
  p.catch(() => undefined);
  return p;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(what)), ms)))]).finally(() => clearTimeout(timer));
}

/**
 * Has the API write a heap snapshot (SIGUSR2, --heapsnapshot-signal) and summarizes it. V8 writes it on the main
 * thread: a health check answered after the file appeared was answered after it was complete.
 */
async function heapSnapshot(dir: string, pid: number, c: ReturnType<typeof ownClient>): Promise<HeapSummary> {
  const before = new Set(readdirSync(dir));
  process.kill(pid, 'SIGUSR2');
  const deadline = Date.now() + 120_000;
  let file: string | undefined;
  while (!file) {
    if (Date.now() > deadline) throw new Error('the API wrote no heap snapshot within 120 s');
    file = readdirSync(dir).find((f) => f.endsWith('.heapsnapshot') && !before.has(f));
    if (!file) await sleep(100);
  }
  await healthCheck(c);
  return summarizeHeapSnapshot(join(dir, file));
}

/** What grew between two snapshots, per stream, biggest first. */
function heapGrowth(idle: HeapSummary, open: HeapSummary, streams: number): HeapGroup[] {
  const before = new Map(idle.all.map((g) => [g.what, g]));
  return open.all
    .map((g) => ({ what: g.what, count: (g.count - (before.get(g.what)?.count ?? 0)) / streams, bytes: (g.bytes - (before.get(g.what)?.bytes ?? 0)) / streams }))
    .sort((a, b) => b.bytes - a.bytes);
}
