import type { Queue } from 'bullmq';
import type { Caller } from '@imgbuilder/common/access-tokens';
import { isTerminal, type BuildStore, type CancelRequests } from '@imgbuilder/common/build-life';
import { BuildAlreadyEnded, BuildNotFound, cancelMessage, CancelNotPermitted } from '@imgbuilder/common/errors';
import type { Logger } from '@imgbuilder/common/logger';
import type { EventHub } from '../logs/event-hub.js';
import type { BuildCaller } from '../grpc/caller.js';
import { mayCancel } from './cancel-permission.js';

/**
 * How long a cancel waits for the worker to end the build (abort the engine, upload the log) before it ends the
 * build itself: waiters get their done_failure within 5 s either way.
 */
const WORKER_END_WAIT_MS = 3_000;

export interface CancelDeps {
  store: BuildStore;
  cancels: CancelRequests;
  queue: Queue;
  hub: EventHub;
  log: Logger;
  retentionMs: number;
}

export interface CancelResult {
  buildId: string;
  cancelledBy: string;
  alreadyCancelled: boolean;
}

/**
 * Cancels a build for the CancelBuild rpc and the dashboard. A job no worker holds leaves the queue and the build is
 * ended here; a running one is aborted by its worker (told through Redis), which ends it the usual way. Either way
 * the ending is the one atomic finish every waiter on every API process reads, and it frees the ref for the next
 * Build. Returns once the build has ended.
 */
export class BuildCanceller {
  constructor(private readonly d: CancelDeps) {}

  /**
   * `token`: the access token the request came with, undefined without tokens (its role decides); `caller`: who asks
   * (caller.ts), compared with the build's attributed triggered_by and recorded as who cancelled it.
   */
  async cancel(buildId: string, token: Caller | undefined, caller: BuildCaller): Promise<CancelResult> {
    const { store, cancels, log } = this.d;
    const record = await store.get(buildId);
    if (!record) throw new BuildNotFound(buildId, `build ${buildId} not found (finished builds are kept for IMGBUILDER_LOG_RETENTION)`);
    if (!mayCancel(token, caller, record.triggeredBy)) {
      const who = caller.triggeredBy ? `caller "${caller.id}" (token "${token!.name}", role ${token!.role})` : `token "${token!.name}" (role ${token!.role})`;
      throw new CancelNotPermitted(caller.id, `${who} may cancel only the builds it triggered; build ${buildId} is not one of them (role admin may cancel any)`);
    }
    const by = caller.id || 'anonymous';
    const asked = await cancels.request(buildId, by);
    if (asked.outcome === 'gone') throw new BuildNotFound(buildId);
    if (asked.outcome === 'ended') throw ended(buildId, asked.state);
    const first = asked.outcome === 'requested';
    const cancelledBy = first ? by : asked.by;
    if (first) log.info({ build_id: buildId, ref: record.ref, by, state: asked.state }, 'build cancel requested');
    else log.info({ build_id: buildId, by, first: asked.by }, 'build cancel requested again');

    if (!isTerminal(asked.state)) {
      // Removal fails for a job a worker holds (locked): that worker aborts the build on the notice.
      const removed = await this.d.queue.remove(buildId).catch(() => 0);
      const message = cancelMessage(cancelledBy);
      if (removed || !(await this.ended(buildId, WORKER_END_WAIT_MS))) {
        // Nobody runs it (it left the queue), or its worker is not answering: end it here. Without a fencing token
        // the finish bumps it, so a worker that answers late writes nothing more. The log may be partial: Logs keeps
        // reading Redis's copy.
        const now = await store.finish({ buildId, ref: record.ref, state: 'done_failure', message, retentionMs: this.d.retentionMs, eventsTtlMs: this.d.retentionMs, logPending: !removed });
        if (now) log.info({ build_id: buildId, by: cancelledBy, queued: Boolean(removed) }, removed ? 'cancelled build removed from the queue' : 'cancelled build ended by the API: its worker did not end it in time');
      }
    }
    const after = await store.get(buildId);
    // The build's own end won the race: it was not cancelled.
    if (after && after.message !== cancelMessage(cancelledBy)) throw ended(buildId, after.state);
    return { buildId, cancelledBy, alreadyCancelled: !first };
  }

  /** Whether the build ends within `ms`. */
  private async ended(buildId: string, ms: number): Promise<boolean> {
    const signal = AbortSignal.timeout(ms);
    const from = await this.d.store.lastEventId(buildId);
    if (isTerminal((await this.d.store.get(buildId))?.state ?? 'done_failure')) return true;
    try {
      for await (const e of this.d.hub.events(buildId, signal, from)) if (e.kind === 'state' && isTerminal(e.state)) return true;
    } catch (err) {
      if (!signal.aborted) throw err;
    }
    return isTerminal((await this.d.store.get(buildId))?.state ?? 'done_failure');
  }
}

function ended(buildId: string, state: string): BuildAlreadyEnded {
  return new BuildAlreadyEnded(buildId, state, `build ${buildId} has already ended (${state}); only queued or running builds can be cancelled`);
}
