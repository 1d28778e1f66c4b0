import type { Logger } from '@imgbuilder/common/logger';
import { stopTracing } from '@imgbuilder/common/tracing';
import type { Backends } from './connect.js';
import type { Listeners } from './listen.js';

/** How long open streams get to finish once a stop is asked for. */
const GRACE_MS = 10_000;

/** On SIGTERM or SIGINT: no new calls, open streams get GRACE_MS, then every server and connection closes. */
export function stopOnSignals(listeners: Listeners, backends: Backends, log: Logger): void {
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, `shutting down: no new calls, open streams get ${GRACE_MS / 1000}s`);
    // Streams that never close (clients that stopped reading) must not keep the pod alive past its grace period.
    const force = setTimeout(() => {
      listeners.grpc.forceShutdown();
      process.exit(0);
    }, GRACE_MS);
    force.unref();
    listeners.grpc.tryShutdown(async () => {
      listeners.http?.close();
      listeners.supervisor?.close();
      listeners.dashboard?.server.close();
      listeners.dashboard?.data.stop();
      await backends.queue.close().catch(() => undefined);
      backends.redis.disconnect();
      backends.pubsub.disconnect();
      await stopTracing();
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}
