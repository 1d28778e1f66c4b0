import { hostname } from 'node:os';
import type { Queue } from 'bullmq';
import { type BuildRecord, type BuildStore, isTerminal, type QueueSamples } from '@imgbuilder/common/build-life';
import type { Logger } from '@imgbuilder/common/logger';

const HOUR_MS = 3_600_000;
/** How often each API pod samples the queue for the chart. */
const SAMPLE_INTERVAL_MS = 10_000;
/** Viewers polling at once share one read of Redis per this interval. */
const LIST_CACHE_MS = 1_000;
const PIPELINE_BATCH = 500;

export interface BuildRow {
  id: string;
  ref: string;
  baseRef: string;
  state: BuildRecord['state'];
  message: string;
  triggeredBy: string;
  /** Unix ms. */
  queuedAt: number;
  runningAt?: number;
  buildAt?: number;
  pushAt?: number;
  finishedAt?: number;
}

export interface BuildFilter {
  status?: string;
  /** Matched against the workspace and base ref. */
  ref?: string;
  id?: string;
  limit: number;
}

export interface Charts {
  /** Minute starts (unix ms) of the last hour, oldest first, with finished builds per outcome and queue depth. */
  minutes: { t: number; success: number; failure: number; queued: number | null; running: number | null }[];
}

export const toRow = (r: BuildRecord): BuildRow => ({
  id: r.id,
  ref: r.ref,
  baseRef: r.baseRef,
  state: r.state,
  message: r.message,
  triggeredBy: r.triggeredBy,
  queuedAt: r.startedAt * 1000,
  runningAt: r.runningAt,
  buildAt: r.buildAt,
  pushAt: r.pushAt,
  finishedAt: r.finishedAt === undefined ? undefined : r.finishedAt * 1000,
});

export interface DashboardDataOptions {
  /** Reads the build records the `recent` index lists. */
  store: BuildStore;
  samples: QueueSamples;
  /** The build queue, sampled for the chart's queue depth. */
  queue: Queue;
  /** How long finished builds stay in Redis (IMGBUILDER_LOG_RETENTION, 7d): a finished record kept in memory goes when Redis lets it expire. */
  retentionMs: number;
  log: Logger;
}

/**
 * What the dashboard shows, from Redis only (no Prometheus needed): the recent builds (the capped `recent` index
 * written with each new build, records expiring with the retention) and queue-depth samples of the last hour
 * (each API pod adds one every 10 s; older ones are trimmed on every write, so the set stays bounded).
 */
export class DashboardData {
  /** Finished records never change again: read once, kept while the index lists them. */
  private readonly finished = new Map<string, BuildRow>();
  private cached?: { at: number; rows: Promise<BuildRow[]> };
  private sampler?: NodeJS.Timeout;
  private readonly pod = `${hostname()}-${process.pid}`;

  private readonly store: BuildStore;
  private readonly samples: QueueSamples;
  private readonly queue: Queue;
  private readonly retentionMs: number;
  private readonly log: Logger;

  constructor(opts: DashboardDataOptions) {
    ({ store: this.store, samples: this.samples, queue: this.queue, retentionMs: this.retentionMs, log: this.log } = opts);
  }

  startSampling(): void {
    const sample = () =>
      this.sampleQueue().catch((err: Error) => this.log.debug({ err: err.message }, 'queue sample for the dashboard skipped'));
    void sample();
    this.sampler = setInterval(sample, SAMPLE_INTERVAL_MS);
    this.sampler.unref();
  }

  stop(): void {
    clearInterval(this.sampler);
  }

  private async sampleQueue(): Promise<void> {
    const c = await this.queue.getJobCounts('waiting', 'prioritized', 'delayed', 'active');
    const now = Date.now();
    const queued = (c.waiting ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0);
    await this.samples.add({ at: now, queued, running: c.active ?? 0 }, this.pod);
  }

  /** Recent builds, newest first. */
  rows(): Promise<BuildRow[]> {
    const now = Date.now();
    if (!this.cached || now - this.cached.at > LIST_CACHE_MS) {
      const rows = this.readRows();
      rows.catch(() => (this.cached = undefined));
      this.cached = { at: now, rows };
    }
    return this.cached.rows;
  }

  private async readRows(): Promise<BuildRow[]> {
    const ids = await this.store.recentIds();
    const now = Date.now();
    for (const [id, row] of this.finished) if ((row.finishedAt ?? now) + this.retentionMs <= now) this.finished.delete(id);
    const missing = ids.filter((id) => !this.finished.has(id));
    const fetched = new Map<string, BuildRow>();
    const expired: string[] = [];
    for (let i = 0; i < missing.length; i += PIPELINE_BATCH) {
      const batch = missing.slice(i, i + PIPELINE_BATCH);
      (await this.store.getMany(batch)).forEach((rec, j) => {
        if (!rec) return void expired.push(batch[j]);
        const row = toRow(rec);
        fetched.set(batch[j], row);
        if (isTerminal(row.state)) this.finished.set(row.id, row);
      });
    }
    // Records past their retention leave the index too, so it holds only builds that still exist.
    await this.store.forgetRecent(expired).catch(() => undefined);
    const listed = new Set(ids);
    for (const id of this.finished.keys()) if (!listed.has(id)) this.finished.delete(id);
    return ids.map((id) => this.finished.get(id) ?? fetched.get(id)).filter((r): r is BuildRow => Boolean(r));
  }

  async list(f: BuildFilter): Promise<{ builds: BuildRow[]; matched: number; total: number }> {
    const all = await this.rows();
    const ref = f.ref?.toLowerCase();
    const matches = all.filter(
      (r) =>
        (!f.status || stateMatches(r.state, f.status)) &&
        (!ref || r.ref.toLowerCase().includes(ref) || r.baseRef.toLowerCase().includes(ref)) &&
        (!f.id || r.id.startsWith(f.id.toLowerCase())),
    );
    // Queued and running builds first (what operators look for), each group newest first.
    const live = matches.filter((r) => !isTerminal(r.state));
    const done = matches.filter((r) => isTerminal(r.state));
    return { builds: [...live, ...done].slice(0, f.limit), matched: matches.length, total: all.length };
  }

  async charts(): Promise<Charts> {
    const now = Date.now();
    const first = Math.floor((now - HOUR_MS) / 60_000) * 60_000 + 60_000;
    const minutes: Charts['minutes'] = Array.from({ length: 60 }, (_, i) => ({ t: first + i * 60_000, success: 0, failure: 0, queued: null, running: null }));
    const slot = (t: number) => Math.floor((t - first) / 60_000);
    for (const r of await this.rows()) {
      if (r.finishedAt === undefined || !isTerminal(r.state)) continue;
      const i = slot(r.finishedAt);
      if (i >= 0 && i < 60) minutes[i][r.state === 'done_success' ? 'success' : 'failure']++;
    }
    // Pods sample independently: a minute shows the deepest queue any of them saw; null when none was running.
    for (const { at, queued, running } of await this.samples.since(first)) {
      const i = slot(at);
      if (i < 0 || i >= 60) continue;
      minutes[i].queued = Math.max(minutes[i].queued ?? 0, queued);
      minutes[i].running = Math.max(minutes[i].running ?? 0, running);
    }
    return { minutes };
  }
}

function stateMatches(state: BuildRecord['state'], filter: string): boolean {
  if (filter === 'active') return !isTerminal(state);
  if (filter === 'success') return state === 'done_success';
  if (filter === 'failure') return state === 'done_failure';
  return state === filter;
}
