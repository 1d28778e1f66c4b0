/**
 * imgbuilder benchmark suite: `npm run bench` (full, ~8 min) or `npm run bench -- --quick` (smoke: tiny counts, three
 * scenarios at a time, ~1 min).
 * Runs each scenario against real API and worker processes on the local stack, compares every figure with a baseline
 * measured in the same run, prints a table and writes JSON. Numbers never fail the run; errors do (exit 1).
 *
 * Options: --quick, --out <file> (default bench/results/latest.json), --only <name,…>, --cpu-prof (profile the API
 * in the scenarios that look at API CPU even when their targets are met).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { buildDist } from '../testkit/dist.js';
import { GitServer } from '../testkit/git-server.js';
import { localEnv, ROOT } from '../testkit/stack.js';
import type { BenchContext, Scenario } from './scenarios/context.js';
import { overheadScenario } from './scenarios/overhead.js';
import { dedupeScenario } from './scenarios/dedupe.js';
import { cacheHitScenario } from './scenarios/cache-hit.js';
import { logLatencyScenario } from './scenarios/log-latency.js';
import { throughputScenario } from './scenarios/throughput.js';
import { redisMemoryScenario } from './scenarios/redis-memory.js';
import { cacheScenario } from './scenarios/cache.js';
import { logVolumeScenario } from './scenarios/log-volume.js';
import { tracingScenario } from './scenarios/tracing.js';
import { renderTable, type ScenarioResult } from './support/report.js';
import { closeAllStacks } from './support/stack.js';

const SCENARIOS: Scenario[] = [overheadScenario, dedupeScenario, cacheHitScenario, logLatencyScenario, throughputScenario, redisMemoryScenario, cacheScenario, logVolumeScenario, tracingScenario];

function parseArgs(argv: string[]) {
  const opts = { quick: false, out: join(ROOT, 'bench/results/latest.json'), only: undefined as string[] | undefined, cpuProf: false, up: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') opts.quick = true;
    else if (a === '--cpu-prof') opts.cpuProf = true;
    // The local stack is already up and shared with others (re-running up.sh would rotate its Redis password).
    else if (a === '--no-up') opts.up = false;
    else if (a === '--out') opts.out = resolve(argv[++i] ?? '');
    else if (a === '--only') opts.only = (argv[++i] ?? '').split(',').filter(Boolean);
    else if (a === '--help' || a === '-h') {
      console.log('usage: tsx bench/main.ts [--quick] [--out file.json] [--only overhead,dedupe,cache-hit,log-latency,throughput,redis-memory,cache,log-volume,tracing] [--no-up] [--cpu-prof]');
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  for (const n of opts.only ?? []) if (!SCENARIOS.some((s) => s.name === n)) throw new Error(`unknown scenario ${n}; known: ${SCENARIOS.map((s) => s.name).join(', ')}`);
  return opts;
}

function machine() {
  const cpuModel = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpus()[0]?.model ?? 'unknown';
  let docker = 'unknown';
  try {
    docker = execFileSync('docker', ['version', '--format', '{{.Server.Version}}'], { encoding: 'utf8', timeout: 10_000 }).trim();
  } catch {
    /* reported as unknown */
  }
  return { nproc: cpus().length, memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10, cpuModel, node: process.version, docker, loadavgAtStart: loadavg() };
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const log = (msg: string) => process.stderr.write(`[bench ${((Date.now() - started) / 1000).toFixed(0).padStart(3)}s] ${msg}\n`);
  if (opts.up) {
    log('starting the local stack (idempotent)');
    execFileSync('bash', [join(ROOT, 'infra/local/up.sh')], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
  // The stacks run the bundles, as the tests do.
  buildDist();
  const git = await GitServer.start();
  let stopping = false;
  const interrupted = (signal: string) => {
    stopping = true;
    log(`${signal}: stopping the benchmark's API and worker processes; no results are written`);
    void closeAllStacks().finally(() => {
      git.stop();
      process.exit(130);
    });
  };
  process.once('SIGINT', () => interrupted('SIGINT'));
  process.once('SIGTERM', () => interrupted('SIGTERM'));
  const artefactDir = opts.out.replace(/\.json$/, '') + '.artefacts';
  mkdirSync(artefactDir, { recursive: true });
  const selected = SCENARIOS.filter((s) => !opts.only || opts.only.includes(s.name));
  const results: ScenarioResult[] = [];
  const meta = { startedAt: new Date(started).toISOString(), quick: opts.quick, machine: machine() };
  const runOne = async (s: Scenario): Promise<ScenarioResult> => {
    const t0 = Date.now();
    const ctx: BenchContext = { quick: opts.quick, git, env: localEnv(), cpuProf: opts.cpuProf, artefactDir: join(artefactDir, s.name), progress: (m) => log(`${s.name}: ${m}`) };
    log(`${s.name}: ${s.title}`);
    try {
      const r = await s.run(ctx);
      return { name: s.name, title: s.title, ...r, seconds: Math.round((Date.now() - t0) / 100) / 10 };
    } catch (err) {
      if (!stopping) log(`${s.name} FAILED: ${(err as Error).stack ?? String(err)}`);
      return { name: s.name, title: s.title, params: {}, metrics: {}, rows: [], targets: [], notes: [], seconds: Math.round((Date.now() - t0) / 100) / 10, error: (err as Error).message };
    }
  };
  // A full run measures one scenario at a time. A quick run's numbers mean nothing (it proves the code runs): three
  // scenarios side by side, each on its own stacks.
  const queue = selected.map((s, i) => ({ s, i }));
  const lane = async () => {
    for (let next = queue.shift(); next && !stopping; next = queue.shift()) results[next.i] = await runOne(next.s);
  };
  try {
    await Promise.all(Array.from({ length: opts.quick ? 3 : 1 }, lane));
  } finally {
    git.stop();
  }
  // Interrupted: the signal handler ends the process once the stacks are down.
  if (stopping) await new Promise(() => undefined);

  const totalSeconds = Math.round((Date.now() - started) / 1000);
  console.log(`\nimgbuilder benchmarks${opts.quick ? ' (quick smoke run: tiny counts, numbers are not meaningful)' : ''} — ${meta.machine.nproc} CPUs (${meta.machine.cpuModel}), ${meta.machine.memoryGiB} GiB, node ${meta.machine.node}, docker ${meta.machine.docker}; ${totalSeconds} s\n`);
  console.log(renderTable(results));
  for (const r of results) {
    console.log(`\n${r.name} — ${r.title} (${r.seconds} s)`);
    if (r.error) console.log(`  ERROR: ${r.error}`);
    for (const t of r.targets) console.log(`  target ${t.metric} ${t.op} ${t.limit}: ${t.met ? 'met' : 'MISSED'} (${r.metrics[t.metric]})`);
    for (const n of r.notes) console.log(`  - ${n}`);
  }
  mkdirSync(dirname(opts.out), { recursive: true });
  const doc = { ...meta, totalSeconds, loadavgAtEnd: loadavg(), scenarios: Object.fromEntries(results.map((r) => [r.name, r])) };
  writeFileSync(opts.out, JSON.stringify(doc, null, 2) + '\n');
  console.log(`\nwrote ${opts.out}`);
  // gRPC channels and Redis connections of finished scenarios may linger; the run is over.
  process.exit(results.some((r) => r.error) ? 1 : 0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
