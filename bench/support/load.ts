import { p50, p99 } from './stats.js';

export interface LoadResult {
  calls: number;
  errors: number;
  callsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  /** First error message, to name the cause when errors occur. */
  firstError?: string;
}

/**
 * Closed loop: `concurrency` callers each issue their next call as soon as the previous one answered, for `durationMs`
 * after a warm-up. Calls/s counts completed calls in the measured window only.
 */
export async function closedLoop(concurrency: number, durationMs: number, warmupMs: number, call: (worker: number) => Promise<unknown>): Promise<LoadResult> {
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  let measuring = false;
  let stop = false;
  let windowStart = 0;
  let windowEnd = 0;
  const loop = async (w: number) => {
    while (!stop) {
      const t0 = performance.now();
      try {
        await call(w);
        if (measuring) latencies.push(performance.now() - t0);
      } catch (err) {
        if (measuring) errors++;
        firstError ??= (err as Error).message;
      }
    }
  };
  const loops = Array.from({ length: concurrency }, (_, w) => loop(w));
  await new Promise((r) => setTimeout(r, warmupMs));
  measuring = true;
  windowStart = performance.now();
  await new Promise((r) => setTimeout(r, durationMs));
  measuring = false;
  windowEnd = performance.now();
  stop = true;
  await Promise.all(loops);
  const calls = latencies.length;
  return { calls, errors, callsPerSec: (calls * 1000) / (windowEnd - windowStart), p50Ms: p50(latencies), p99Ms: p99(latencies), firstError };
}
