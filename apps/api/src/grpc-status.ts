import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { ImgbuilderError, isConnectionError } from '@imgbuilder/common/errors';
import { ConfigError } from '@imgbuilder/common/config';
import { limitStatusMessage } from '@imgbuilder/common/client-text';
import type { Logger } from '@imgbuilder/common/logger';

/** The one place where errors become gRPC statuses. Unknown errors are logged and answered INTERNAL. */
export function toServiceError(err: unknown, log: Logger, method: string): ServiceError {
  let code: status;
  let details: string;
  if (err instanceof ImgbuilderError) {
    code = status[err.code];
    details = err.message;
  } else if (isRedisUnavailable(err)) {
    code = status.UNAVAILABLE;
    details = 'the build queue (Redis) is unreachable; retry shortly';
  } else if (err instanceof ConfigError) {
    code = status.FAILED_PRECONDITION;
    details = err.message;
  } else {
    code = status.INTERNAL;
    details = 'internal error; see the API server log';
    log.error({ err, method }, 'unexpected error');
  }
  details = limitStatusMessage(details);
  const e = new Error(details) as ServiceError;
  e.code = code;
  e.details = details;
  e.metadata = new Metadata();
  return e;
}

function isRedisUnavailable(err: unknown): boolean {
  const msg = (err as Error)?.message ?? '';
  return (
    isConnectionError(err) ||
    /Connection is closed|Stream isn't writeable|max retries per request|MaxRetriesPerRequest|ClusterAllFailedError|Failed to refresh slots|LOADING|READONLY|enableOfflineQueue/i.test(msg)
  );
}
