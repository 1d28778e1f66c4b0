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
  ConfigError,
  ContextLimitExceeded,
  ContextSymlinkEscape,
  FetchRefused,
  GitError,
  GitRemoteAuthFailed,
  GitRemoteNotFound,
  GitRemoteUnavailable,
  GitResolverBusy,
  GitTargetMissing,
  ImageNotFound,
  type ImgbuilderError,
  ImageRefInvalid,
  InvalidRequest,
  LimiterBusyError,
  QueueFull,
  RegistryAuthFailed,
  RegistryFailed,
  RegistryHttpError,
  RegistryMisconfigured,
  RegistryUnavailable,
  redisOutage,
  RoleInsufficient,
  InstallationAuthDenied,
  SealedForOtherUse,
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
import { limitStatusMessage } from '@imgbuilder/common/client-text';
import type { Logger } from '@imgbuilder/common/logger';
import { HttpError, SlowClientError } from '../errors.js';

type ErrorClass = abstract new (...args: never[]) => Error;

/**
 * For faults a lower layer converts into a domain error before any caller could see them (common's InternalError
 * family): one that reaches a call anyway is a bug, logged and answered INTERNAL without its message.
 */
export const CONVERTED_BELOW = 'converted below';

/**
 * The one table from imgbuilder's errors to gRPC statuses, for every service this API serves: every error class the
 * API can meet (test/unit/grpc-status.test.ts checks). The caller sees the error's own message with its status. A
 * class not listed here (nor any class it extends) answers INTERNAL, logged, without its message.
 */
export const GRPC_STATUS: ReadonlyMap<ErrorClass, status | typeof CONVERTED_BELOW> = new Map<ErrorClass, status | typeof CONVERTED_BELOW>([
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
  [HttpError, status.INVALID_ARGUMENT],
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
  // Faults of common's parts, converted where they are called (git-remote-resolver, registry-client, …)
  [GitError, CONVERTED_BELOW],
  [LimiterBusyError, CONVERTED_BELOW],
  [RegistryHttpError, CONVERTED_BELOW],
  [SealedForOtherUse, CONVERTED_BELOW],
  [ContextSymlinkEscape, CONVERTED_BELOW],
  [ContextLimitExceeded, CONVERTED_BELOW],
]);

/** The status of `err` by its class, or the nearest listed class it extends; undefined for errors not ours. */
export function grpcStatusOf(err: unknown): status | undefined {
  if (!(err instanceof Error)) return undefined;
  for (let proto: unknown = Object.getPrototypeOf(err); proto && proto !== Error.prototype; proto = Object.getPrototypeOf(proto)) {
    const found = GRPC_STATUS.get((proto as { constructor: ErrorClass }).constructor);
    if (found === CONVERTED_BELOW) return undefined;
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
