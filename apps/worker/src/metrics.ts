import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of a worker process; every name starts with `imgbuilder_`. */
export class WorkerMetrics {
  readonly registry = new Registry();
  readonly done = new Counter({ name: 'imgbuilder_builds_done_total', help: 'Builds ended by this worker', labelNames: ['outcome'], registers: [this.registry] });
  readonly duration = new Histogram({
    name: 'imgbuilder_build_duration_seconds',
    help: 'Build duration, job start to terminal state',
    labelNames: ['outcome'],
    buckets: [1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
    registers: [this.registry],
  });
  readonly logBytes = new Counter({ name: 'imgbuilder_log_bytes_total', help: 'Build log bytes written', registers: [this.registry] });
  readonly active = new Gauge({ name: 'imgbuilder_worker_active_builds', help: 'Builds running on this worker', registers: [this.registry] });
  readonly restarted = new Counter({ name: 'imgbuilder_builds_restarted_total', help: 'Builds picked up again after their worker died', registers: [this.registry] });
  readonly pruned = new Counter({ name: 'imgbuilder_prune_reclaimed_bytes_total', help: 'Disk reclaimed by image/build-cache pruning', registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'imgbuilder_worker_' });
  }
}
