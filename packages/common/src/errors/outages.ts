import { BuildStateUnavailable } from './domain.js';

/** True for errors that mean "the other side could not be reached" rather than "it said no". */
export function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: string; cause?: { code?: string } } | undefined)?.code ?? (err as { cause?: { code?: string } })?.cause?.code;
  return (
    typeof code === 'string' &&
    ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET', 'ENOENT', 'ECONNABORTED'].includes(code)
  );
}

/**
 * True when a Redis client error means Redis is away (unreachable, restarting, failing over) rather than a bug or a
 * refusal. ioredis and BullMQ raise plain Errors for these: only their errno code or wording tells them apart, so this
 * is the one place that reads their message text.
 */
export function isRedisUnavailable(err: unknown): boolean {
  const msg = (err as Error | undefined)?.message ?? '';
  return (
    isConnectionError(err) ||
    /Connection is closed|Stream isn't writeable|max retries per request|MaxRetriesPerRequest|ClusterAllFailedError|Failed to refresh slots|LOADING|READONLY|enableOfflineQueue/i.test(msg)
  );
}

/** The domain error a Redis client's error stands for when it means Redis is away; undefined for any other error. */
export function redisOutage(err: unknown): BuildStateUnavailable | undefined {
  return isRedisUnavailable(err) ? new BuildStateUnavailable('the build queue (Redis) is unreachable; retry shortly', { cause: err }) : undefined;
}
