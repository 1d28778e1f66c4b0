import { round } from './stats.js';

/** A target from the issue: `metric op limit`. Benchmarks report whether it was met; they never fail on it. */
export interface Target {
  metric: string;
  op: '<=' | '>=' | '<' | '==';
  limit: number;
  met: boolean;
}

/** One printed line: a figure, the baseline measured in the same run, and their comparison. */
export interface Row {
  figure: string;
  value: number;
  unit: string;
  baseline?: { label: string; value: number };
  /** Text for the "vs baseline" column, e.g. "×1.03" or "+120 ms". */
  compare?: string;
  target?: string;
}

export interface ScenarioResult {
  name: string;
  title: string;
  /** Counts and durations the scenario ran with. */
  params: Record<string, number | string>;
  /** Every figure of the scenario, flat and numeric (ms, calls/s, MiB, counts). */
  metrics: Record<string, number>;
  rows: Row[];
  targets: Target[];
  /** What exactly was measured, and where the time goes when a target is missed. */
  notes: string[];
  /** Supporting detail (stage breakdowns, profiles); not all of it numeric. */
  breakdown?: Record<string, unknown>;
  seconds: number;
  /** Set when the scenario could not run to the end. */
  error?: string;
}

export function target(metric: string, value: number, op: Target['op'], limit: number): Target {
  const met = op === '<=' ? value <= limit : op === '>=' ? value >= limit : op === '<' ? value < limit : value === limit;
  return { metric, op, limit, met: Number.isFinite(value) && met };
}

export function fmt(n: number, unit = ''): string {
  if (!Number.isFinite(n)) return 'n/a';
  const digits = Math.abs(n) >= 100 ? 0 : Math.abs(n) >= 10 ? 1 : 2;
  return `${round(n, digits)}${unit ? ` ${unit}` : ''}`;
}

export function ratio(value: number, baseline: number): string {
  return Number.isFinite(value / baseline) ? `×${round(value / baseline, 2)}` : 'n/a';
}

export function delta(value: number, baseline: number, unit: string): string {
  const d = value - baseline;
  return Number.isFinite(d) ? `${d >= 0 ? '+' : ''}${fmt(d, unit)}` : 'n/a';
}

/** Plain-text table of all scenarios (also valid Markdown, for the README). */
export function renderTable(results: ScenarioResult[]): string {
  const head = ['scenario', 'figure', 'value', 'baseline (same run)', 'vs baseline', 'target'];
  const lines: string[][] = [];
  for (const r of results) {
    for (const row of r.rows) {
      lines.push([
        r.name,
        row.figure,
        fmt(row.value, row.unit),
        row.baseline ? `${row.baseline.label}: ${fmt(row.baseline.value, row.unit)}` : '',
        row.compare ?? '',
        row.target ?? '',
      ]);
    }
  }
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  return [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...lines.map(line)].join('\n');
}

/** "met" / "MISSED" mark for a row's target column. */
export function targetText(t: Target, unit = ''): string {
  return `${t.op} ${t.limit}${unit ? ` ${unit}` : ''} ${t.met ? 'met' : 'MISSED'}`;
}
