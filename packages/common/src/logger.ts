import { pino, type Logger, type LevelWithSilent } from 'pino';
import { activeTraceId } from './tracing.js';

export type { Logger };

/**
 * Structured JSON logs. Secrets never reach a log call; `redact` is a second line of defence. A process logs at `info`
 * until its configuration is parsed (so a bad one is still reported), then at the configured LOG_LEVEL (main sets `log.level`).
 */
export function createLogger(name: string, level: LevelWithSilent = 'info'): Logger {
  return pino({
    name,
    level,
    base: { service: name, pid: process.pid },
    // A line logged while a build's span is active names its trace (tracing.ts), in every process it passes through.
    mixin: () => {
      const traceId = activeTraceId();
      return traceId ? { trace_id: traceId } : {};
    },
    redact: { paths: ['*.password', '*.auth', '*.authPassword', '*.authOts', '*.additional', 'credentials', 'url', '*.url'], censor: '[redacted]' },
  });
}
