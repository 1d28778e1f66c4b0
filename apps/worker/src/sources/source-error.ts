import type { ContextLimitExceeded } from '@imgbuilder/common/context-walker';
import { SourceRefused } from '@imgbuilder/common/errors';

/**
 * A build-source failure; it becomes the build's done_failure message. The user's to fix unless `infrastructure`
 * says the service's own storage failed while reading it.
 */
export class SourceError extends Error {
  override name = 'SourceError';
  constructor(
    message: string,
    readonly infrastructure = false,
  ) {
    super(message);
  }
}

/** A source-policy refusal ends the build; their message is already user-facing. */
export function asSource<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof SourceRefused) throw new SourceError(err.message);
    throw err;
  }
}

/** A context cap crossed, in the worker's words: the walker's wording and the setting that sets the cap. */
export function contextLimitMessage(err: ContextLimitExceeded): string {
  return `${err.message} (${err.limit === 'files' ? 'IMGBUILDER_MAX_CONTEXT_FILES' : 'IMGBUILDER_MAX_CONTEXT_BYTES'})`;
}
