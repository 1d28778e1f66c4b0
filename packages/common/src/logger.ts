import { pino, type Logger } from 'pino';

export type { Logger };

/** Structured JSON logs. Secrets never reach a log call; `redact` is a second line of defence. */
export function createLogger(name: string, level = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({
    name,
    level,
    base: { service: name, pid: process.pid },
    redact: { paths: ['*.password', '*.auth', '*.authPassword', '*.authOts', '*.additional', 'credentials', 'url', '*.url'], censor: '[redacted]' },
  });
}
