import { CancelRequests } from '@imgbuilder/common/build-cancel';
import { callerOf, type BuildJobData } from '@imgbuilder/common/build-job';
import { BuildCancelled } from '@imgbuilder/common/errors';
import type { FairShare } from '@imgbuilder/common/fair-share';
import type { Logger } from '@imgbuilder/common/logger';
import type { RedisClient } from '@imgbuilder/common/redis';
import type { RedisKeys } from '@imgbuilder/common/redis-keys';

export interface BuildControlDeps {
  redis: RedisClient;
  /** A connection of its own, left subscribed to the cancel channel. */
  subscriber: RedisClient;
  keys: RedisKeys;
  fair: FairShare;
  log: Logger;
  /** IMGBUILDER_MAX_RUNNING_PER_CALLER; 0: no limit. */
  maxRunningPerCaller: number;
}

/**
 * The worker's side of cancel and fair share. A cancel notice aborts the build's controller with BuildCancelled as
 * the reason: the runner stops the engine's solve (the request is aborted) and ends the build with that message. A
 * build whose caller already holds IMGBUILDER_MAX_RUNNING_PER_CALLER slots is not started (the caller defers it).
 */
export class WorkerBuildControl {
  private readonly cancels: CancelRequests;

  constructor(
    private readonly d: BuildControlDeps,
    /** The controllers of the builds this worker runs, by build id (= job id). */
    private readonly running: ReadonlyMap<string, AbortController>,
  ) {
    this.cancels = new CancelRequests(d.redis, d.keys);
  }

  async start(): Promise<void> {
    await CancelRequests.listen(this.d.subscriber, this.d.keys, (n) => this.abort(n.id, n.by));
    // Notices sent while the connection was down are lost: look at what runs here once it is back.
    this.d.subscriber.on('ready', () => void this.sweep().catch((err: Error) => this.d.log.warn({ err: err.message }, 'cancel sweep failed')));
  }

  /** Aborts the build if someone asked to cancel it before this worker listened for it (call once it is in `running`). */
  async checkCancelled(buildId: string): Promise<void> {
    const by = await this.cancels.requestedBy(buildId);
    if (by) this.abort(buildId, by);
  }

  /** Whether this worker may start the job now (false: its caller is at its running limit; defer it). */
  async mayStart(job: BuildJobData): Promise<boolean> {
    if (!this.d.maxRunningPerCaller) return true;
    return this.d.fair.takeSlot(job.buildId, callerOf(job), this.d.maxRunningPerCaller);
  }

  private abort(buildId: string, by: string): void {
    const ctl = this.running.get(buildId);
    if (!ctl || ctl.signal.aborted) return;
    this.d.log.info({ build_id: buildId, by }, 'build cancelled: stopping it');
    ctl.abort(new BuildCancelled(by));
  }

  private async sweep(): Promise<void> {
    for (const id of this.running.keys()) await this.checkCancelled(id);
  }
}
