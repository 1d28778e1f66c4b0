import { randomUUID } from 'node:crypto';
import type { Queue } from 'bullmq';
import { isTerminal, lockTtlMs, type BuildRecord, type BuildStore } from '@imgbuilder/common/build-life';
import { formatDuration } from '@imgbuilder/common/duration';
import type { Logger } from '@imgbuilder/common/logger';

export interface ReaperOptions {
  store: BuildStore;
  /** The build queue: a build whose job is gone from it is ended. */
  queue: Queue;
  /** Ends one build as failed; false when it had already moved on (its fencing token no longer holds). */
  end: (r: ReapReason) => Promise<boolean>;
  log: Logger;
  /** How often a pass runs, on whichever worker takes the lock (IMGBUILDER_REAPER_INTERVAL, 15s). */
  intervalMs: number;
  /**
   * A build this young may still be between its record and `queue.add` (the API creating its log object): twice
   * IMGBUILDER_S3_TIMEOUT (10s) plus 5s.
   */
  enqueueGraceMs: number;
  /** IMGBUILDER_BUILD_TIMEOUT (60m): with the queue wait, a build's deadline; the dedupe lock's TTL (lockTtlMs). */
  buildTimeoutMs: number;
  /** How long a build may wait in the queue (IMGBUILDER_MAX_QUEUE_WAIT, 6h). */
  maxQueueWaitMs: number;
  /** More work one process at a time should do, run after each pass under its lock (the cache retention). */
  duties?: (() => Promise<void>)[];
}

/** Whether a build's job is gone from the queue (never there, lost, or finished or failed by BullMQ): nothing will run it. */
export async function jobGone(queue: Queue, jobId: string): Promise<boolean> {
  const state = await queue.getJobState(jobId);
  return state === 'unknown' || state === 'completed' || state === 'failed';
}

/** A build to end: `token` is the fencing token it was judged under, so a build that moved on meanwhile is left alone. */
export type ReapReason = { buildId: string; ref: string; message: string; token: number };

/**
 * Ends builds nothing else will end: those whose job is gone from the queue (the API died between creating the
 * record and queueing the job; Redis lost the job) and those past their deadline (queue wait granted plus build
 * timeout). Runs in every worker; a Redis lock lets one pass run per interval. Each pass also keeps the dedupe lock
 * of every live build alive, however long it waits in the queue.
 */
export class Reaper {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private readonly me = randomUUID();
  private passes = 0;

  private readonly store: BuildStore;
  private readonly queue: Queue;
  private readonly end: (r: ReapReason) => Promise<boolean>;
  private readonly log: Logger;

  constructor(private readonly opts: ReaperOptions) {
    ({ store: this.store, queue: this.queue, end: this.end, log: this.log } = opts);
  }

  start(): void {
    this.timer = setInterval(() => {
      this.running ??= this.pass()
        .catch((err: Error) => this.log.warn({ err: err.message }, 'reaper pass failed'))
        .finally(() => (this.running = undefined));
    }, this.opts.intervalMs);
    this.timer.unref();
  }

  /** Stops the timer; resolves once a pass in progress (ending builds) is over. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }

  /** One pass, if this process holds the lock for the interval. */
  async pass(): Promise<void> {
    // Held for most of an interval: the next pass, on whichever process, starts once it lapses.
    if (!(await this.store.takeReaperTurn(this.me, this.opts.intervalMs - 200))) return;
    const live = await this.store.listLive();
    let ended = 0;
    for (const rec of live) {
      const why = await this.verdict(rec);
      if (!why) {
        await this.store.extendLock(rec.ref, rec.id, lockTtlMs(this.opts.buildTimeoutMs));
        continue;
      }
      ended++;
      this.log.warn({ build_id: rec.id, ref: rec.ref, why }, 'reaper ends build');
      await this.end({ buildId: rec.id, ref: rec.ref, message: why, token: rec.attempt });
      // A queued job of a build ended for its deadline would only be picked up to find it over.
      await this.queue.remove(rec.id).catch(() => undefined);
    }
    this.log.debug({ pass: ++this.passes, live: live.length, ended }, 'reaper pass');
    for (const duty of this.opts.duties ?? []) await duty().catch((err: Error) => this.log.warn({ err: err.message }, 'reaper duty failed'));
  }

  private async verdict(rec: BuildRecord): Promise<string | undefined> {
    const now = Date.now();
    if (await jobGone(this.queue, rec.id)) {
      if (now - rec.startedAt * 1000 < this.opts.enqueueGraceMs) return undefined;
      // Re-read: the job may have just ended the build the normal way.
      const fresh = await this.store.get(rec.id);
      if (!fresh || isTerminal(fresh.state)) return undefined;
      return 'build failed: its job is gone from the build queue (the API that queued it stopped at the wrong moment, or Redis lost it); call Build again';
    }
    if (rec.deadlineAt !== undefined && now > rec.deadlineAt) {
      return rec.state === 'queued'
        ? `build failed: it waited in the queue longer than IMGBUILDER_MAX_QUEUE_WAIT (${formatDuration(this.opts.maxQueueWaitMs)}); call Build again`
        : `build failed: it ran past IMGBUILDER_BUILD_TIMEOUT (${formatDuration(this.opts.buildTimeoutMs)}) and its worker did not end it`;
    }
    return undefined;
  }
}
