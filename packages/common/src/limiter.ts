import { LimiterBusyError } from './errors.js';

/**
 * At most `limit` tasks at a time; the rest wait in order, each at most `maxWaitMs` (then it fails with
 * LimiterBusyError without running), so a burst of slow tasks cannot build a backlog that delays everyone for
 * hours. Small enough to keep here rather than add a dependency (p-limit) for one use.
 */
export class Limiter {
  private running = 0;
  private readonly waiting: { start: () => void }[] = [];

  constructor(
    private readonly limit: number,
    private readonly maxWaitMs = Infinity,
  ) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) await this.slot();
    else this.running++;
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      // The slot passes straight to the next waiter, so `running` stays counted.
      if (next) next.start();
      else this.running--;
    }
  }

  private slot(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const entry = {
        start: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer =
        this.maxWaitMs === Infinity
          ? undefined
          : setTimeout(() => {
              this.waiting.splice(this.waiting.indexOf(entry), 1);
              reject(new LimiterBusyError(`waited ${this.maxWaitMs} ms for one of ${this.limit} slots`));
            }, this.maxWaitMs);
      this.waiting.push(entry);
    });
  }

  /** Tasks waiting for a slot. */
  get queued(): number {
    return this.waiting.length;
  }
}
