/** Order statistics over plain samples. Empty input gives NaN, which the JSON shows as null: a visible gap. */

export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  // Nearest-rank: p99 of 100 samples is the 99th value, never an interpolation below the worst real sample.
  const rank = Math.min(s.length, Math.max(1, Math.ceil(q * s.length)));
  return s[rank - 1];
}

export const median = (values: readonly number[]): number => {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

export const p50 = (v: readonly number[]) => quantile(v, 0.5);
export const p99 = (v: readonly number[]) => quantile(v, 0.99);
export const max = (v: readonly number[]) => (v.length ? v.reduce((a, b) => (b > a ? b : a), -Infinity) : NaN);

export function round(n: number, digits = 1): number {
  if (!Number.isFinite(n)) return n;
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
