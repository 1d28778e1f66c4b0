import { ImgbuilderError } from '@imgbuilder/common/errors';
import { EngineError, SourceError, UserBuildError } from '../errors.js';

/**
 * Gitpod's server counts a failed build as the user's fault (no alert for its operators) only when the terminal
 * message starts with this (`looksLikeUserError` in its workspace-starter). Infrastructure failures must not.
 */
export const USER_FAILURE_PREFIX = 'build failed: ';

/** Engine messages that blame the build host, whatever the Dockerfile did. */
const HOST_TROUBLE = /no space left on device|input\/output error|read-only file system/i;

/**
 * The done_failure message for an error that ended a build. Failures of the user's source or Dockerfile (a
 * failing step, a missing Dockerfile, a bad context, a source that cannot be fetched, an image the engine cannot
 * pull for it) carry USER_FAILURE_PREFIX; the engine, the registry and storage keep their own wording. The class
 * decides: imgbuilder's own errors (ImgbuilderError) that reach here unwrapped come from the registry, storage or
 * the service itself, while the source stage wraps the source policy's refusals in SourceError first.
 */
export function failureMessage(err: unknown): string {
  if (isUserCaused(err)) return `${USER_FAILURE_PREFIX}${(err as Error).message}`;
  if (isKnownFailure(err)) return err.message;
  if ((err as Error)?.name === 'AbortError') return 'build was cancelled';
  return `internal error: ${(err as Error)?.message ?? String(err)}`;
}

/** A failure of a kind the worker expects and words itself (the source, the engine, imgbuilder's own errors). */
export function isKnownFailure(err: unknown): err is SourceError | EngineError | ImgbuilderError {
  return err instanceof SourceError || err instanceof EngineError || err instanceof ImgbuilderError;
}

export function isUserCaused(err: unknown): boolean {
  if (err instanceof SourceError) return !err.infrastructure;
  return err instanceof UserBuildError && !HOST_TROUBLE.test(err.message);
}

/** The build log's last line for a failure: says "build failed" once, whichever side caused it. */
export function failureLogLine(message: string): string {
  return message.startsWith(USER_FAILURE_PREFIX) ? message : `${USER_FAILURE_PREFIX}${message}`;
}
