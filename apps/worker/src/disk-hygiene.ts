import type Docker from 'dockerode';
import type { Logger } from '@imgbuilder/common/logger';
import type { WorkerMetrics } from './metrics.js';

export interface HygieneOptions {
  /** Images and build cache unused this long are removed. */
  olderThanMs: number;
  intervalMs: number;
}

/**
 * Keeps a worker's disk from filling: periodically prunes dangling images, unused images and build cache older
 * than the threshold. (Temp dirs are removed by each build itself.)
 */
export class DiskHygiene {
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly docker: Docker,
    private readonly opts: HygieneOptions,
    private readonly metrics: WorkerMetrics,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.prune(), this.opts.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async prune(): Promise<number> {
    const until = `${Math.floor(this.opts.olderThanMs / 1000)}s`;
    let reclaimed = 0;
    try {
      const dangling = await this.docker.pruneImages({ filters: { dangling: ['true'], until: [until] } });
      reclaimed += dangling.SpaceReclaimed ?? 0;
      const unused = await this.docker.pruneImages({ filters: { dangling: ['false'], until: [until] } });
      reclaimed += unused.SpaceReclaimed ?? 0;
      const cache = (await this.docker.modem.dial({ path: `/build/prune?filters=${encodeURIComponent(JSON.stringify({ until: [until] }))}`, method: 'POST', statusCodes: { 200: true } }) as unknown) as { SpaceReclaimed?: number };
      reclaimed += cache?.SpaceReclaimed ?? 0;
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'disk hygiene: prune failed');
    }
    if (reclaimed) {
      this.metrics.pruned.inc(reclaimed);
      this.log.info({ reclaimed }, 'disk hygiene: pruned images and build cache');
    }
    return reclaimed;
  }
}
