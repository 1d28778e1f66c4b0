const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Parses a duration setting: plain seconds (`900`) or a number with one unit (`15m`, `1h`, `7d`, `500ms`).
 * Returns milliseconds, or undefined when the text is not a duration.
 */
export function parseDuration(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!m) return undefined;
  const ms = Number(m[1]) * UNIT_MS[m[2] ?? 's'];
  return Number.isFinite(ms) ? Math.round(ms) : undefined;
}

/**
 * A duration for people. `exact` (the default) writes settings and limits as one would set them: `1h`, `90s`, `250ms`.
 * `elapsed` writes measured time, rounded: `3.2s`, `1m05s` (the CLI's progress lines).
 */
export function formatDuration(ms: number, style: 'exact' | 'elapsed' = 'exact'): string {
  if (style === 'elapsed') {
    if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
    const s = Math.round(ms / 1000);
    return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  }
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1_000]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)}s` : `${ms}ms`;
}
