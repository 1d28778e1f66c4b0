import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { DEMAND_STATES, type BuildEvent } from '@imgbuilder/common/build-life';
import type { Queue } from 'bullmq';

/** Prometheus metrics of an API process; every name starts with `imgbuilder_`. */
export class ApiMetrics {
  readonly registry = new Registry();
  readonly started = new Counter({ name: 'imgbuilder_builds_started_total', help: 'Builds queued by this API process', registers: [this.registry] });
  readonly deduplicated = new Counter({ name: 'imgbuilder_builds_deduplicated_total', help: 'Build calls that joined a build already queued or running', registers: [this.registry] });
  private readonly calls = new Counter({ name: 'imgbuilder_grpc_calls_total', help: 'gRPC calls by method and status code', labelNames: ['method', 'code'], registers: [this.registry] });
  readonly streams = new Gauge({ name: 'imgbuilder_grpc_open_streams', help: 'Build and Logs streams open on this process', labelNames: ['method'], registers: [this.registry] });

  private readonly logLatency = new Histogram({
    name: 'imgbuilder_log_latency_seconds',
    help: 'From a worker appending a log chunk to Redis until this API process read it for its live subscribers',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });

  constructor(queue?: Queue) {
    collectDefaultMetrics({ register: this.registry, prefix: 'imgbuilder_api_' });
    if (queue) {
      // Scaling signal for workers (KEDA): BullMQ keeps prioritized jobs outside `wait`, so count every state.
      new Gauge({
        name: 'imgbuilder_queue_builds',
        help: 'Builds in the queue by state',
        labelNames: ['state'],
        registers: [this.registry],
        async collect() {
          const c = await queue.getJobCounts('waiting', 'prioritized', 'active', 'delayed');
          for (const [state, n] of Object.entries(c)) this.set({ state }, n);
        },
      });
      new Gauge({
        name: 'imgbuilder_queue_demand',
        help: 'Builds wanting a worker slot, whatever line fair share put them in (waiting, prioritized, delayed, active)',
        registers: [this.registry],
        async collect() {
          const c = await queue.getJobCounts(...DEMAND_STATES);
          this.set(Object.values(c).reduce((a, b) => a + b, 0));
        },
      });
    }
  }

  /** Observes live log chunks; a Redis stream id starts with the append's time in ms. */
  logsRead(batch: BuildEvent[]): void {
    const now = Date.now();
    for (const e of batch) if (e.kind === 'log') this.logLatency.observe(Math.max(0, now - Number(e.id.slice(0, e.id.indexOf('-')))) / 1000);
  }

  /** Counts a call; the returned function records its final code. */
  callStarted(method: string): (code: string) => void {
    const streaming = method === 'Build' || method === 'Logs';
    if (streaming) this.streams.inc({ method });
    return (code) => {
      if (streaming) this.streams.dec({ method });
      this.calls.inc({ method, code });
    };
  }
}
