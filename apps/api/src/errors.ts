import { ImgbuilderError } from '@imgbuilder/common/errors';

// The API's own errors: what only this server raises (the domain errors every layer shares live in
// @imgbuilder/common/errors). Each is in the status table (grpc/grpc-status.ts).

/** The client stopped reading a stream; it is dropped rather than buffered for without bound. */
export class SlowClientError extends ImgbuilderError {
  constructor(
    readonly drainTimeoutMs: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * A request the dashboard refuses with a 4xx: its status, a message a person can act on, and extra headers. HTTP only;
 * the status table maps it for completeness (a 4xx is the caller's to fix).
 */
export class HttpError extends ImgbuilderError {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}
