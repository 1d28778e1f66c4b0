import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from '../../testkit/stack.js';

// The scenarios whose machinery no integration test drives. The others run whole in `npm run bench`; in CI their paths
// are the integration tests' own (redis-memory.test, build-cache.test, logs.test, traces.test), and a quick run of
// them would cost more than a minute of the 10-minute budget. All of bench/ is type-checked and linted either way.
const SCENARIOS = ['overhead', 'dedupe', 'cache-hit', 'log-latency', 'throughput', 'streams'];
const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-bench-smoke-'));

afterAll(() => rmSync(dir, { recursive: true, force: true }));

function run(cmd: string, args: string[], timeoutMs: number): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: ROOT, env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`bench did not finish within ${timeoutMs} ms:\n${output.slice(-3000)}`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

// Benchmarks never fail on speed: this only proves every scenario still runs end to end and reports its figures.
describe('benchmark suite, quick mode', () => {
  it('runs the scenarios no integration test drives and writes finite numeric figures, with one docker build for the deduplicated calls', async () => {
    const out = join(dir, 'result.json');
    // Set-up started the local stack already.
    const { code, output } = await run('npx', ['tsx', 'bench/main.ts', '--quick', '--no-up', '--only', SCENARIOS.join(','), '--out', out], 540_000);
    // A failed scenario's line is early in the output, its stack and the table after it: name it before the tail.
    const failed = output.split('\n').filter((l) => / FAILED: /.test(l));
    expect(code, [...failed, output.slice(-4000)].join('\n')).toBe(0);
    expect(output).toContain(`wrote ${out}`);

    const doc = JSON.parse(readFileSync(out, 'utf8')) as { scenarios: Record<string, { error?: string; metrics: Record<string, unknown> }> };
    expect(Object.keys(doc.scenarios).sort()).toEqual([...SCENARIOS].sort());
    for (const name of SCENARIOS) {
      const s = doc.scenarios[name];
      expect(s.error, `${name}: ${s.error}`).toBeUndefined();
      const figures = Object.entries(s.metrics);
      expect(figures.length, name).toBeGreaterThan(0);
      for (const [k, v] of figures) expect(typeof v === 'number' && Number.isFinite(v), `${name}.${k} = ${v}`).toBe(true);
    }
    expect(doc.scenarios.dedupe.metrics.dockerBuilds).toBe(1);
    expect(doc.scenarios.dedupe.metrics.workerBuildsRun).toBe(1);
    expect(doc.scenarios.streams.metrics.failures, 'streams: every Build and Logs stream complete').toBe(0);
  }, 600_000);
});
