import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { httpGet, metricsUrl } from '../support/http.js';
import { ROOT, startStack, type Stack } from '../../testkit/stack.js';

interface Target {
  refId: string;
  expr: string;
  datasource: { uid: string };
}
interface Panel {
  id: number;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  targets: Target[];
}

const dashboard = JSON.parse(readFileSync(join(ROOT, 'infra/grafana/imgbuilder.json'), 'utf8')) as { uid: string; panels: Panel[]; templating: { list: { name: string; type: string }[] } };

let stack: Stack;
let exported: Set<string>;

/** Every series name a /metrics text can carry, from its `# TYPE` lines (present before any sample exists). */
function seriesNames(text: string): string[] {
  const names: string[] = [];
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = m;
    if (type === 'histogram') names.push(`${name}_bucket`, `${name}_sum`, `${name}_count`);
    else if (type === 'summary') names.push(name, `${name}_sum`, `${name}_count`);
    else names.push(name);
  }
  return names;
}

beforeAll(async () => {
  stack = await startStack({ apis: 1, workers: 1 });
  const texts = await Promise.all([stack.apis[0], stack.workers[0]].map(async (p) => (await httpGet(`${await metricsUrl(p)}/metrics`)).body));
  exported = new Set(texts.flatMap(seriesNames));
});

afterAll(async () => {
  await stack?.stop();
});

it('the Grafana dashboard queries only metrics the API and the worker export', () => {
  const used = new Set(dashboard.panels.flatMap((p) => p.targets.flatMap((t) => [...t.expr.matchAll(/\bimgbuilder_[a-z0-9_]+\b/g)].map((m) => m[0]))));
  expect([...used].filter((n) => !exported.has(n))).toEqual([]);
  // What the issue asks the dashboard to show.
  for (const n of ['imgbuilder_queue_demand', 'imgbuilder_builds_done_total', 'imgbuilder_build_duration_seconds_bucket', 'imgbuilder_log_latency_seconds_bucket', 'imgbuilder_ready']) expect(used).toContain(n);
});

it('is importable: unique panel ids, a Prometheus datasource variable every query uses, no overlapping panels', () => {
  expect(dashboard.uid).toBe('imgbuilder');
  expect(dashboard.templating.list).toContainEqual(expect.objectContaining({ name: 'datasource', type: 'datasource' }));
  const ids = dashboard.panels.map((p) => p.id);
  expect(new Set(ids).size).toBe(ids.length);
  for (const p of dashboard.panels) {
    expect(p.targets.length, p.title).toBeGreaterThan(0);
    for (const t of p.targets) expect(t.datasource.uid).toBe('${datasource}');
    expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
  }
  const cells = new Set<string>();
  for (const p of dashboard.panels)
    for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++)
      for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
        expect(cells.has(`${x},${y}`), `${p.title} overlaps another panel`).toBe(false);
        cells.add(`${x},${y}`);
      }
});
