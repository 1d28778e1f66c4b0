import { createServer, type Server } from 'node:http';
import { listenOn } from './listen.js';
import { Gauge, type Registry } from 'prom-client';

export interface HealthServerOptions {
  /** `host:port`. */
  addr: string;
  registry: Registry;
  /** Resolves when the process can do its work (dependencies reachable). */
  ready: () => Promise<boolean>;
  /** Why the process is not ready, when it knows (shown in /readyz's 503 body). */
  notReadyReason?: () => string | undefined;
  /** A probe slower than this counts as not ready (a Redis client may queue commands while it reconnects). */
  probeTimeoutMs?: number;
  /** Findings /readyz reports after its verdict, one `name: value` line each (they do not decide readiness). */
  details?: () => Record<string, string>;
}

/** Runs a readiness probe; false when it throws, says no, or takes too long. */
export function probe(ready: () => Promise<boolean>, timeoutMs = 3_000): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const slow = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  return Promise.race([ready().catch(() => false), slow]).finally(() => clearTimeout(timer));
}

/** What /readyz answers, as a metric: dashboards count ready workers without probing them. */
export function registerReadyGauge(registry: Registry, ready: () => Promise<boolean>, probeTimeoutMs?: number): void {
  new Gauge({
    name: 'imgbuilder_ready',
    help: 'Whether this process is ready (what /readyz answers): 1 ready, 0 not',
    registers: [registry],
    async collect() {
      this.set((await probe(ready, probeTimeoutMs)) ? 1 : 0);
    },
  });
}

/** HTTP /livez, /readyz and /metrics (Prometheus text format). */
export async function startHealthServer(opts: HealthServerOptions): Promise<Server> {
  registerReadyGauge(opts.registry, opts.ready, opts.probeTimeoutMs);
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/livez') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      // probe() never rejects: a failing or slow check answers 503.
      void probe(opts.ready, opts.probeTimeoutMs).then((ok) => {
        const reason = ok ? undefined : opts.notReadyReason?.();
        const details = Object.entries(opts.details?.() ?? {}).map(([k, v]) => `${k}: ${v}\n`);
        res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end([ok ? 'ready\n' : `not ready${reason ? `: ${reason}` : ''}\n`, ...details].join(''));
      });
    } else if (path === '/metrics') {
      opts.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': opts.registry.contentType }).end(text),
        () => res.writeHead(500).end(),
      );
    } else {
      res.writeHead(404).end();
    }
  });
  await listenOn(server, opts.addr);
  return server;
}
