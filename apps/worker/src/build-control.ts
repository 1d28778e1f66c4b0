import type { CancelRequests, FairShare } from '@imgbuilder/common/build-life';
import type { BuildJobData } from '@imgbuilder/common/build-job';
import { BuildCancelled } from '@imgbuilder/common/errors';
import type { Logger } from '@imgbuilder/common/logger';
import type { RedisClient } from '@imgbuilder/common/redis';

export interface BuildControlDeps {
  cancels: CancelRequests;
  /** A connection of its own, left subscribed to the cancel channel. */
  subscriber: RedisClient;
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
  constructor(
    private readonly d: BuildControlDeps,
    /** The controllers of the builds this worker runs, by build id (= job id). */
    private readonly running: ReadonlyMap<string, AbortController>,
  ) {}

  async start(): Promise<void> {
    await this.d.cancels.listen(this.d.subscriber, (n) => this.abort(n.id, n.by));
    // Notices sent while the connection was down are lost: look at what runs here once it is back.
    this.d.subscriber.on('ready', () => void this.sweep().catch((err: Error) => this.d.log.warn({ err: err.message }, 'cancel sweep failed')));
  }

  /** Aborts the build if someone asked to cancel it before this worker listened for it (call once it is in `running`). */
  async checkCancelled(buildId: string): Promise<void> {
    const by = await this.d.cancels.requestedBy(buildId);
    if (by) this.abort(buildId, by);
  }

  /** Whether this worker may start the job now (false: its caller is at its running limit; defer it). */
  async mayStart(job: BuildJobData): Promise<boolean> {
    if (!this.d.maxRunningPerCaller) return true;
    // The caller is the build's attributed triggered_by: the API's one caller identity, carried by the job.
    return this.d.fair.takeSlot(job.buildId, job.triggeredBy, this.d.maxRunningPerCaller);
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
