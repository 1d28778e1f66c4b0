import { status } from '@grpc/grpc-js';
import { grpcStatusOf } from '../grpc/grpc-status.js';

/** HTTP answers for the domain errors a dashboard action (Cancel) may end in, by their gRPC status (grpc-status.ts). */
const HTTP_STATUS: Partial<Record<status, number>> = {
  [status.INVALID_ARGUMENT]: 400,
  [status.NOT_FOUND]: 404,
  [status.PERMISSION_DENIED]: 403,
  [status.FAILED_PRECONDITION]: 409,
  [status.UNAVAILABLE]: 503,
};

/** The HTTP status of a domain error (500 for one no row names), or undefined for an error that is not one. */
export function httpStatusOf(err: unknown): number | undefined {
  const code = grpcStatusOf(err);
  return code === undefined ? undefined : (HTTP_STATUS[code] ?? 500);
}
