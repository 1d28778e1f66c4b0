import { readFileSync } from 'node:fs';
import type { Queue } from 'bullmq';
import { Histogram, type Registry, Summary } from 'prom-client';
import { expect, it } from 'vitest';
import { registerReadyGauge } from '@imgbuilder/common/health-server';
import { ApiMetrics } from '../../apps/api/src/metrics.js';
import { WorkerMetrics } from '../../apps/worker/src/metrics.js';

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

const dashboard = JSON.parse(readFileSync(new URL('../../infra/grafana/imgbuilder.json', import.meta.url), 'utf8')) as { uid: string; panels: Panel[]; templating: { list: { name: string; type: string }[] } };

/**
 * Every series name a process's /metrics can carry, read from its registry in-process: the metrics are registered
 * when the registry is made (ApiMetrics, WorkerMetrics) and by the health server (imgbuilder_ready), before any sample.
 */
function seriesNames(registry: Registry): string[] {
  return registry.getMetricsAsArray().flatMap((m) => {
    if (m instanceof Histogram) return [`${m.name}_bucket`, `${m.name}_sum`, `${m.name}_count`];
    if (m instanceof Summary) return [m.name, `${m.name}_sum`, `${m.name}_count`];
    return [m.name];
  });
}

/** What the API and the worker export: their metrics plus the health server's gauge. */
function exportedSeries(): Set<string> {
  // The queue's gauges read it only when scraped: no queue is needed to name them.
  const registries = [new ApiMetrics({} as Queue).registry, new WorkerMetrics().registry];
  for (const r of registries) registerReadyGauge(r, async () => true);
  return new Set(registries.flatMap(seriesNames));
}

it('the Grafana dashboard queries only metrics the API and the worker export', () => {
  const used = new Set(dashboard.panels.flatMap((p) => p.targets.flatMap((t) => [...t.expr.matchAll(/\bimgbuilder_[a-z0-9_]+\b/g)].map((m) => m[0]))));
  const exported = exportedSeries();
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
