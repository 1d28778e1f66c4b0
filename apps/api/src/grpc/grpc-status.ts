import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import {
  AccessTokenRejected,
  BuildAlreadyEnded,
  BuildCancelled,
  BuildLogExpired,
  BuildNotFound,
  BuildStateUnavailable,
  CallerQueueFull,
  CancelNotPermitted,
  FetchRefused,
  GitRemoteAuthFailed,
  GitRemoteNotFound,
  GitRemoteUnavailable,
  GitResolverBusy,
  GitTargetMissing,
  ImageNotFound,
  type ImgbuilderError,
  ImageRefInvalid,
  InvalidRequest,
  QueueFull,
  RegistryAuthFailed,
  RegistryFailed,
  RegistryMisconfigured,
  RegistryUnavailable,
  RoleInsufficient,
  InstallationAuthDenied,
  SecretsUnsealable,
  SourceRefused,
  StorageFull,
  StorageUnavailable,
  TerminalNotFound,
  UnknownService,
  UploadCancelled,
  UploadCapacityReached,
  UploadTimedOut,
  UploadTooLarge,
  WorkspaceImageMissing,
} from '@imgbuilder/common/errors';
import { ConfigError } from '@imgbuilder/common/config';
import { limitStatusMessage } from '@imgbuilder/common/client-text';
import { redisOutage } from '@imgbuilder/common/redis';
import type { Logger } from '@imgbuilder/common/logger';
import { SlowClientError } from './stream-writer.js';

type ErrorClass = abstract new (...args: never[]) => Error;

/**
 * The one table from imgbuilder's errors to gRPC statuses, for every service this API serves. The caller sees the
 * error's own message with its status. A class not listed here (nor any class it extends) answers INTERNAL.
 */
export const GRPC_STATUS: ReadonlyMap<ErrorClass, status> = new Map<ErrorClass, status>([
  // The caller's request
  [InvalidRequest, status.INVALID_ARGUMENT],
  [ImageRefInvalid, status.INVALID_ARGUMENT],
  [SourceRefused, status.INVALID_ARGUMENT],
  [GitTargetMissing, status.INVALID_ARGUMENT],
  [FetchRefused, status.INVALID_ARGUMENT],
  [AccessTokenRejected, status.UNAUTHENTICATED],
  [RoleInsufficient, status.PERMISSION_DENIED],
  [InstallationAuthDenied, status.PERMISSION_DENIED],
  [UnknownService, status.NOT_FOUND],
  // Images, registries and git remotes (REFERENCE.md "ResolveBaseImage")
  [ImageNotFound, status.NOT_FOUND],
  [RegistryAuthFailed, status.UNAUTHENTICATED],
  [RegistryUnavailable, status.UNAVAILABLE],
  [RegistryFailed, status.INTERNAL],
  [RegistryMisconfigured, status.FAILED_PRECONDITION],
  [GitRemoteNotFound, status.NOT_FOUND],
  [GitRemoteAuthFailed, status.UNAUTHENTICATED],
  [GitRemoteUnavailable, status.UNAVAILABLE],
  [GitResolverBusy, status.UNAVAILABLE],
  // Builds
  [BuildNotFound, status.NOT_FOUND],
  [BuildLogExpired, status.NOT_FOUND],
  [TerminalNotFound, status.NOT_FOUND],
  [QueueFull, status.RESOURCE_EXHAUSTED],
  [CallerQueueFull, status.RESOURCE_EXHAUSTED],
  [BuildAlreadyEnded, status.FAILED_PRECONDITION],
  [CancelNotPermitted, status.PERMISSION_DENIED],
  [BuildStateUnavailable, status.UNAVAILABLE],
  [SlowClientError, status.RESOURCE_EXHAUSTED],
  // Raised by the worker, where they end a build rather than a call; listed so the table stays complete.
  [WorkspaceImageMissing, status.INTERNAL],
  [SecretsUnsealable, status.FAILED_PRECONDITION],
  [BuildCancelled, status.CANCELLED],
  // Storage and uploads
  [StorageUnavailable, status.UNAVAILABLE],
  [StorageFull, status.RESOURCE_EXHAUSTED],
  [UploadTooLarge, status.RESOURCE_EXHAUSTED],
  [UploadCapacityReached, status.RESOURCE_EXHAUSTED],
  [UploadTimedOut, status.DEADLINE_EXCEEDED],
  [UploadCancelled, status.CANCELLED],
  // The operator's configuration (a tokens file that stopped parsing, …)
  [ConfigError, status.FAILED_PRECONDITION],
]);

/** The status of `err` by its class, or the nearest listed class it extends; undefined for errors not ours. */
export function grpcStatusOf(err: unknown): status | undefined {
  if (!(err instanceof Error)) return undefined;
  for (let proto: unknown = Object.getPrototypeOf(err); proto && proto !== Error.prototype; proto = Object.getPrototypeOf(proto)) {
    const found = GRPC_STATUS.get((proto as { constructor: ErrorClass }).constructor);
    if (found !== undefined) return found;
  }
  return undefined;
}

/** Turns any error into the status a caller gets. Unknown errors are logged and answered INTERNAL, without their message. */
export function toServiceError(err: unknown, log: Logger, method: string): ServiceError {
  const known = grpcStatusOf(err);
  if (known !== undefined) return serviceError(known, (err as Error).message);
  // Not ours: a Redis client's error that means Redis is away answers as the domain error it stands for.
  const outage = redisOutage(err);
  if (outage) return toServiceError(outage, log, method);
  log.error({ err, method }, 'unexpected error');
  return INTERNAL();
}

/** For code with no logger at hand that holds one of imgbuilder's own errors (the access guard). */
export function domainServiceError(err: ImgbuilderError): ServiceError {
  const known = grpcStatusOf(err);
  return known === undefined ? INTERNAL() : serviceError(known, err.message);
}

const INTERNAL = () => serviceError(status.INTERNAL, 'internal error; see the API server log');

function serviceError(code: status, message: string): ServiceError {
  const details = limitStatusMessage(message);
  const e = new Error(details) as ServiceError;
  e.code = code;
  e.details = details;
  e.metadata = new Metadata();
  return e;
}
