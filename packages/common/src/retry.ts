export interface RetryOptions {
  /** Most attempts in all (first try included). */
  attempts?: number;
  /** Give up once the next wait would end past this many ms from the first try. */
  deadlineMs?: number;
  /** Wait before attempt `attempt + 1`, after attempt `attempt` (1-based) failed. */
  delayMs: (attempt: number) => number;
  /** Whether this error is worth another attempt; default: every error. */
  retriable?: (err: unknown) => boolean;
  /** Told about each failure that will be retried (log it, tell the user). */
  onRetry?: (err: unknown, attempt: number) => void;
}

/** Runs `fn` until it succeeds, the error is not retriable, or attempts / deadline run out (then rethrows). */
export async function retry<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions): Promise<T> {
  const deadline = opts.deadlineMs === undefined ? Infinity : Date.now() + opts.deadlineMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      const delay = opts.delayMs(attempt);
      const exhausted = attempt >= (opts.attempts ?? Infinity) || Date.now() + delay > deadline;
      if (exhausted || (opts.retriable && !opts.retriable(err))) throw err;
      opts.onRetry?.(err, attempt);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
