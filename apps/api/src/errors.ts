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
