import type { Queue } from 'bullmq';
import type { BuildRequest } from '@imgbuilder/proto';
import { type BuildStore, ENQUEUE_LOCK_TTL_MS, type FairShare, lockTtlMs, type LogStore } from '@imgbuilder/common/build-life';
import type { BuildJobData } from '@imgbuilder/common/build-job';
import { CallerQueueFull, QueueFull } from '@imgbuilder/common/errors';
import type { Logger } from '@imgbuilder/common/logger';
import type { SecretBox } from '@imgbuilder/common/secret-box';
import type { ApiMetrics } from '../metrics.js';
import type { BuildPlan } from '../plan/build-plan.js';
import { composeJob } from '../plan/job-composition.js';
import { inSpan, linkTo, SpanKind, traceCarrier } from '@imgbuilder/common/tracing';

export interface StartConfig {
  retentionMs: number;
  buildTimeoutMs: number;
  /** How long a build may wait in the queue; with the build timeout, its deadline (enforced by the reaper). */
  maxQueueWaitMs: number;
  maxQueued: number;
  /** Queued builds one caller may have (IMGBUILDER_MAX_QUEUED_PER_CALLER); 0: no limit. */
  maxQueuedPerCaller: number;
  /** Test only: exit between creating a build and queueing its job (IMGBUILDER_FAULT_EXIT_BEFORE_ENQUEUE). */
  faultExitBeforeEnqueue?: boolean;
}

export interface StartDeps {
  store: BuildStore;
  queue: Queue<BuildJobData>;
  logStore: LogStore;
  /** Each caller's line in the queue (priorities). */
  fair: FairShare;
  /** Seals the credentials a job carries. */
  secrets: SecretBox;
  metrics: ApiMetrics;
}

/** A planned build, with what its job is made of beside the plan. */
export interface BuildStart {
  plan: BuildPlan;
  req: BuildRequest;
  /** The name of the access token the request came with, if any. */
  tokenName: string | undefined;
}

/**
 * Starts builds, or joins the one of the same workspace ref that is queued or running: concurrent calls for one ref
 * get one build (build-store.ts decides who creates it), and only its creator queues a job, in its caller's
 * fair-share line. The caller is the request's attributed triggered_by (caller.ts's attributeBuild has run).
 */
export class BuildStarter {
  constructor(
    private readonly cfg: StartConfig,
    private readonly deps: StartDeps,
  ) {}

  /** Joins the build queued or running for the plan's ref, or queues a new one; returns its id. */
  async startOrJoin({ plan, req, tokenName }: BuildStart, log: Logger): Promise<string> {
    const { store, queue, logStore, fair, metrics } = this.deps;
    const sealJob = composeJob(plan, req, tokenName, this.deps.secrets);
    const caller = req.triggeredBy;
    if (!(await store.activeIdForRef(plan.ref))) await this.checkQueueRoom(caller);
    const { created, id } = await inSpan('create-or-join', () => store.createOrJoin({
      ref: plan.ref,
      baseRef: plan.baseRef,
      triggeredBy: req.triggeredBy,
      // Short until the job is safely queued: if this process dies in between, the lock frees itself.
      lockTtlMs: ENQUEUE_LOCK_TTL_MS,
      retentionMs: this.cfg.retentionMs,
      // Room past the build timeout for the worker's own timeout handling and final log upload.
      deadlineAt: Date.now() + this.cfg.maxQueueWaitMs + this.cfg.buildTimeoutMs + 5 * 60_000,
      traceparent: traceCarrier()?.traceparent,
    }));
    if (!created) {
      metrics.deduplicated.inc();
      await this.traceJoin(id);
      log.info({ build_id: id }, 'joined running build');
      return id;
    }
    if (this.cfg.faultExitBeforeEnqueue) {
      log.warn({ build_id: id }, 'fault point: exiting before queueing the build (IMGBUILDER_FAULT_EXIT_BEFORE_ENQUEUE)');
      process.exit(70);
    }
    try {
      // The log object exists from the first `running` message on, so its presigned URL never answers 404. Its
      // creation is bounded by the store's deadline and runs alongside queueing; a process dying in this window
      // leaves a build without a job, which the reaper ends.
      await inSpan('enqueue', () =>
        Promise.all([
          logStore.create(id).catch((err: Error) => log.warn({ err: err.message, build_id: id }, 'could not create the log object yet')),
          // The job carries this span's context: the worker's spans continue the caller's trace. Its priority is its
          // place in its caller's line (fair-share.ts); a joined build keeps its creator's.
          fair.enqueue(id, caller).then((priority) => queue.add('build', { ...sealJob(id), trace: traceCarrier() }, { jobId: id, priority })),
        ]), { kind: SpanKind.PRODUCER, attributes: { 'imgbuilder.build_id': id } });
      await store.extendLock(plan.ref, id, lockTtlMs(this.cfg.buildTimeoutMs));
    } catch (err) {
      await store.finish({ buildId: id, ref: plan.ref, state: 'done_failure', message: 'build could not be queued', retentionMs: this.cfg.retentionMs, eventsTtlMs: this.cfg.retentionMs }).catch(() => undefined);
      throw err;
    }
    metrics.started.inc();
    log.info({ build_id: id, plan: plan.kind }, 'build queued');
    return id;
  }

  /** A joiner's trace gets a span linked to the one that created the build (its traceparent is in the record). */
  private async traceJoin(id: string): Promise<void> {
    if (!traceCarrier()) return;
    const creator = (await this.deps.store.get(id).catch(() => undefined))?.traceparent;
    await inSpan('join', async () => undefined, { links: linkTo(creator ? { traceparent: creator } : undefined), attributes: { 'imgbuilder.build_id': id } });
  }

  /** A new build needs room in the queue (IMGBUILDER_MAX_QUEUED_BUILDS) and in its caller's line; joining one needs none. */
  private async checkQueueRoom(caller: string): Promise<void> {
    const queued = await this.deps.queue.getJobCountByTypes('waiting', 'prioritized', 'delayed');
    if (queued >= this.cfg.maxQueued) {
      throw new QueueFull(queued, this.cfg.maxQueued, `build queue is full (${queued} builds waiting, limit IMGBUILDER_MAX_QUEUED_BUILDS=${this.cfg.maxQueued}); retry later`);
    }
    const limit = this.cfg.maxQueuedPerCaller;
    if (!limit) return;
    const mine = (await this.deps.fair.count(caller)).queued;
    if (mine >= limit) {
      const who = caller ? `caller "${caller}"` : 'the anonymous caller';
      throw new CallerQueueFull(caller, mine, limit, `${who} has ${mine} builds waiting, the limit per caller (IMGBUILDER_MAX_QUEUED_PER_CALLER=${limit}); retry once some have started`);
    }
  }
}
