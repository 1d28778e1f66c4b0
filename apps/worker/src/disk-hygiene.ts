import { readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { isTerminal, type BuildStore } from '@imgbuilder/common/build-life';
import type { Logger } from '@imgbuilder/common/logger';
import type { WorkerMetrics } from './metrics.js';

export interface HygieneOptions {
  docker: Docker;
  /** Tells whether the build a temp dir belongs to has ended. */
  store: BuildStore;
  metrics: WorkerMetrics;
  log: Logger;
  /** Images, build cache and temp dirs of finished builds unused this long are removed (IMGBUILDER_PRUNE_AFTER, 24h). */
  olderThanMs: number;
  /** How often a prune runs (IMGBUILDER_PRUNE_INTERVAL, 10m). */
  intervalMs: number;
  /**
   * An attempt never runs longer than this, so an older temp dir is garbage whatever its build's state
   * (IMGBUILDER_BUILD_TIMEOUT, 60m).
   */
  buildTimeoutMs: number;
  /** Label (`key=value`) carried by the images this installation builds (`org.imgbuilder.namespace=<namespace>`). */
  ownImagesLabel: string;
  /**
   * Unused tagged images pruned: every one (`all`, a dedicated engine) or only those with the label (`own`)
   * (IMGBUILDER_PRUNE_IMAGES, all).
   */
  images: 'all' | 'own';
  /** Where build temp dirs live (`imgbuilder-<build id>-*`); the OS temp dir when absent. */
  tempRoot?: string;
}

export interface PruneResult {
  images: number;
  bytes: number;
  dirs: number;
}

const TEMP_DIR = /^imgbuilder-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-/;

/**
 * Keeps a worker's disk from filling: periodically removes dangling images, unused images and build cache older than
 * the threshold, and temp dirs that builds left behind when their worker died. Dangling images are garbage whoever
 * made them; on an engine shared with others (`images: 'own'`) only images this installation built are pruned.
 */
export class DiskHygiene {
  private timer?: NodeJS.Timeout;
  private running?: Promise<PruneResult>;

  private readonly docker: Docker;
  private readonly store: BuildStore;
  private readonly metrics: WorkerMetrics;
  private readonly log: Logger;

  constructor(private readonly opts: HygieneOptions) {
    ({ docker: this.docker, store: this.store, metrics: this.metrics, log: this.log } = opts);
  }

  start(): void {
    this.timer = setInterval(() => void this.prune(), this.opts.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** One pass; a pass still running is joined rather than doubled. */
  prune(): Promise<PruneResult> {
    this.running ??= this.pass().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async pass(): Promise<PruneResult> {
    const until = `${Math.floor(this.opts.olderThanMs / 1000)}s`;
    const result: PruneResult = { images: 0, bytes: 0, dirs: 0 };
    const count = (r: { ImagesDeleted?: unknown[]; SpaceReclaimed?: number }) => {
      result.images += (r.ImagesDeleted ?? []).length;
      result.bytes += r.SpaceReclaimed ?? 0;
    };
    const step = async (what: string, fn: () => Promise<void>) => {
      await fn().catch((err: Error) => this.log.warn({ err: err.message }, `disk hygiene: ${what} failed`));
    };
    await step('dangling image prune', async () => count(await this.docker.pruneImages({ filters: { dangling: ['true'], until: [until] } })));
    const own = this.opts.images === 'own' ? { label: [this.opts.ownImagesLabel] } : {};
    await step('image prune', async () => count(await this.docker.pruneImages({ filters: { dangling: ['false'], until: [until], ...own } })));
    await step('build cache prune', async () => {
      result.bytes += (await this.pruneBuildCache(until)).SpaceReclaimed ?? 0;
    });
    result.dirs = await this.pruneTempDirs().catch((err: Error) => {
      this.log.warn({ err: err.message }, 'disk hygiene: temp dir cleanup failed');
      return 0;
    });
    if (result.images || result.bytes || result.dirs) {
      this.metrics.pruned.inc(result.bytes);
      this.log.info(result, 'disk hygiene: pruned');
    }
    return result;
  }

  /** dockerode has no call for it; the modem needs a callback (without one an error response crashes the process). */
  private pruneBuildCache(until: string): Promise<{ SpaceReclaimed?: number }> {
    return new Promise((resolve, reject) =>
      this.docker.modem.dial(
        { path: '/build/prune?', method: 'POST', options: { filters: JSON.stringify({ until: [until] }) }, statusCodes: { 200: true, 500: 'server error' } },
        (err: unknown, data: unknown) => (err ? reject(err) : resolve((data ?? {}) as { SpaceReclaimed?: number })),
      ),
    );
  }

  /** Temp dirs of builds that ended (or can no longer be running anywhere); each build removes its own otherwise. */
  private async pruneTempDirs(): Promise<number> {
    const root = this.opts.tempRoot ?? tmpdir();
    let removed = 0;
    for (const name of await readdir(root)) {
      const m = TEMP_DIR.exec(name);
      if (!m) continue;
      const path = join(root, name);
      const info = await stat(path).catch(() => undefined);
      if (!info?.isDirectory()) continue;
      const age = Date.now() - info.mtimeMs;
      if (age < this.opts.olderThanMs) continue;
      const abandoned = age > this.opts.olderThanMs + this.opts.buildTimeoutMs;
      if (!abandoned) {
        const record = await this.store.get(m[1]);
        if (!record || !isTerminal(record.state)) continue;
      }
      await rm(path, { recursive: true, force: true });
      removed++;
    }
    return removed;
  }
}
