import { ImgbuilderError } from '@imgbuilder/common/errors';

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

/** Policy errors raised in the worker end the build; their message is already user-facing. */
export function asSource<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof ImgbuilderError) throw new SourceError(err.message);
    throw err;
  }
}
