/**
 * Faults raised inside common's own parts (git, the registry client, the limiter, the secret box, the context walk)
 * for the layer that called them to convert: the API into one of the domain errors (../errors.ts), the worker into a
 * build's failure message. Their messages may carry detail meant for the log, so the status table answers one that
 * reaches a call anyway as INTERNAL without its message.
 */
export abstract class InternalError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** git could not run, or failed; the message has no secrets (git.ts scrubs them). */
export class GitError extends InternalError {}

/** A registry's HTTP answer; `status` lets callers tell not-found from denied. */
export class RegistryHttpError extends InternalError {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** A task that waited longer than the limiter's `maxWaitMs` for a slot; it never ran. */
export class LimiterBusyError extends InternalError {}

/** A sealed blob that does not open here: another key, another build, or altered. */
export class SealedForOtherUse extends InternalError {
  constructor() {
    super('the sealed credentials do not belong to this build (copied from another job, altered, or sealed under another IMGBUILDER_SECRET_KEY); refused');
  }
}

/** A symlink (or the `.dockerignore`) pointing outside the build context. */
export class ContextSymlinkEscape extends InternalError {
  constructor(
    /** Relative to the context. */
    readonly path: string,
    /** The link's own target text. */
    readonly link: string,
    message: string,
  ) {
    super(message);
  }
}

/** The build context holds more files or bytes than a cap allows. */
export class ContextLimitExceeded extends InternalError {
  constructor(
    readonly limit: 'files' | 'bytes',
    readonly max: number,
  ) {
    super(limit === 'files' ? `build context has more than ${max} files` : `build context is larger than ${max} bytes`);
  }
}
