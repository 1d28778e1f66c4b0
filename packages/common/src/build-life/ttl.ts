/**
 * How long a ref's dedupe lock lasts past its last refresh, once the build's job is queued: twice the build timeout
 * plus 10 minutes. The worker's reaper refreshes it every interval while the build lives, so it lapses only when no
 * worker is left to refresh it.
 */
export function lockTtlMs(buildTimeoutMs: number): number {
  return buildTimeoutMs * 2 + 600_000;
}

/**
 * The dedupe lock's life until the API has queued the build's job: short, so a lock whose API died in between
 * frees itself.
 */
export const ENQUEUE_LOCK_TTL_MS = 60_000;

/**
 * How long a caller's fair-share sets outlive its last build's entry: the longest a build may wait in the queue and
 * run, plus 10 minutes. The API and the worker both refresh them, with the same life.
 */
export function fairShareTtlMs(maxQueueWaitMs: number, buildTimeoutMs: number): number {
  return maxQueueWaitMs + buildTimeoutMs + 600_000;
}
