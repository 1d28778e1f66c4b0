import type { BuildStore, LogStore } from '@imgbuilder/common/build-life';
import type { Logger } from '@imgbuilder/common/logger';
import { retry } from '@imgbuilder/common/retry';
import { inSpan } from '@imgbuilder/common/tracing';
import { BuildReporter } from './build-reporter.js';
import type { WorkerMetrics } from '../metrics.js';
import { failureLogLine } from './failure-message.js';

/** Recording the end retries through a Redis outage this long; past it the reaper ends the build. */
const FINISH_RETRY_MS = 60_000;

export interface EndingDeps {
  store: BuildStore;
  logs: LogStore;
  metrics: WorkerMetrics;
  retentionMs: number;
  /**
   * Once the object holds the whole log, Redis keeps its copy only this long (IMGBUILDER_LOG_STREAM_TTL): for
   * subscribers already tailing the stream; later readers get the object.
   */
  streamTtlMs: number;
  maxLogBytes: number;
  redisTailBytes: number;
  log: Logger;
}

export interface Ending {
  buildId: string;
  ref: string;
  state: 'done_success' | 'done_failure';
  /** Why it failed (empty on success); also the last line of the log. */
  message: string;
  /**
   * The fencing token the ending is judged under: the running attempt's, or for the reaper the one it judged the
   * build under (`rec.attempt`), so a build that moved on meanwhile is left alone. Undefined only for BullMQ's failed
   * handler, which ends whatever is live.
   */
  token?: number;
  /** Set when the build ran: its duration goes to the metrics. */
  startedMs?: number;
}

/**
 * Ends a build, the one way every path does (success, failure, timeout, a build BullMQ gave up on, the reaper):
 * the reason as the log's last line, the complete log in the object store (or pending, retried in the background),
 * then the terminal state in Redis, once. Returns whether this call ended it (false: already ended, or a newer
 * attempt holds it).
 */
export async function endBuild(d: EndingDeps, e: Ending, reporter?: BuildReporter): Promise<boolean> {
  const log = d.log.child({ build_id: e.buildId, ref: e.ref });
  let writer = reporter;
  if (!writer) {
    writer = new BuildReporter({ buildId: e.buildId, token: e.token, maxBytes: d.maxLogBytes, redisTailBytes: d.redisTailBytes, secrets: [] }, d.logs, log);
    await retry(() => writer!.resume(), { deadlineMs: FINISH_RETRY_MS, delayMs: (a) => Math.min(250 * 2 ** a, 5_000) });
  }
  if (e.state === 'done_failure') writer.line(failureLogLine(e.message));
  const uploaded = await inSpan('log upload', () => writer.close());
  if (writer.lost) {
    log.info({ why: writer.lost }, 'build not ended by this attempt');
    return false;
  }
  // Redis refused this log (out of memory): free what it holds of it, so the terminal state can be written.
  if (writer.redisRefused && uploaded) await d.logs.dropStreamLog(e.buildId).catch((err: Error) => log.warn({ err: err.message }, 'could not drop the log from Redis'));
  const message = uploaded ? e.message : `${e.message ? `${e.message}; ` : ''}build log upload pending: the object store is unreachable, retrying`;
  const token = await inSpan('finish', () => retry(
    () => d.store.finish({ buildId: e.buildId, ref: e.ref, state: e.state, message, retentionMs: d.retentionMs, eventsTtlMs: uploaded ? d.streamTtlMs : d.retentionMs, logPending: !uploaded, token: e.token }),
    {
      deadlineMs: FINISH_RETRY_MS,
      delayMs: (attempt) => Math.min(250 * 2 ** (attempt - 1), 5_000),
      onRetry: (err) => log.warn({ err: (err as Error).message }, 'recording the build outcome failed; retrying'),
    },
  ));
  if (!token) {
    log.info('build had already ended, or a newer attempt holds it');
    return false;
  }
  if (!uploaded) void writer.uploadLater(token, () => void d.store.markLogUploaded(e.buildId, d.streamTtlMs).catch(() => undefined));
  const outcome = e.state === 'done_success' ? 'success' : 'failure';
  d.metrics.done.inc({ outcome });
  if (e.startedMs !== undefined) d.metrics.duration.observe({ outcome }, (Date.now() - e.startedMs) / 1000);
  log.info({ outcome: e.state, message, seconds: e.startedMs === undefined ? undefined : (Date.now() - e.startedMs) / 1000 }, 'build ended');
  return true;
}
