/**
 * What went wrong, in imgbuilder's own terms: the errors a caller may see. Each class says who is at fault and carries
 * the facts as fields; the API turns them into gRPC statuses in one table (apps/api/src/grpc/grpc-status.ts), the
 * worker into build outcomes. Nothing here knows a transport.
 */

/** An error whose message is safe to show the caller (it never carries credentials). The base of all below. */
export abstract class ImgbuilderError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

// The caller's request

/** The request is malformed or breaks a documented limit; the message says which field and how. */
export class InvalidRequest extends ImgbuilderError {}

/** An image reference that does not parse. */
export class ImageRefInvalid extends ImgbuilderError {
  constructor(
    readonly ref: string,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

/** The source policy refuses a URL, path or setting the request names (scheme, host, git config key, snapshot bucket). */
export class SourceRefused extends ImgbuilderError {
  constructor(
    /** What was refused, as the request names it ("git remote_uri", "snapshot \"x\""). */
    readonly subject: string,
    message: string,
    readonly host?: string,
  ) {
    super(message);
  }
}

/**
 * The fetch policy (fetch-policy.ts) refuses where a URL or registry leads: an address literal, a DNS answer or a
 * redirect target. The message names the URL without credentials or query, and IMGBUILDER_FETCH_ALLOW.
 */
export class FetchRefused extends SourceRefused {
  constructor(
    subject: string,
    /** The URL (or registry host) as shown: credentials, query and fragment removed. */
    readonly shown: string,
    /** The refused address, when one is known (a literal, or what the host name resolved to). */
    readonly address: string | undefined,
    message: string,
  ) {
    super(subject, message);
  }
}

// Images and registries

/** The registry has no such image (or no linux/amd64 one). */
export class ImageNotFound extends ImgbuilderError {
  constructor(
    readonly ref: string,
    message: string,
  ) {
    super(message);
  }
}

/** The registry refused the credentials used for it (401/403). */
export class RegistryAuthFailed extends ImgbuilderError {
  constructor(
    readonly host: string,
    readonly httpStatus: number,
    message: string,
  ) {
    super(message);
  }
}

/** The registry cannot be reached or is rate-limiting: worth retrying. */
export class RegistryUnavailable extends ImgbuilderError {
  constructor(
    readonly host: string,
    message: string,
    cause?: unknown,
  ) {
    super(message, { cause });
  }
}

/** The registry answered in a way imgbuilder cannot use (an unexpected status, no digest). */
export class RegistryFailed extends ImgbuilderError {
  constructor(
    readonly host: string,
    message: string,
  ) {
    super(message);
  }
}

/** The registry sends imgbuilder somewhere it will not go (a token service that is no URL or a refused address). */
export class RegistryMisconfigured extends ImgbuilderError {
  constructor(
    readonly host: string,
    message: string,
  ) {
    super(message);
  }
}

// Git remotes (resolved by the API before a build)

/** The remote has no HEAD, or no such branch or tag. */
export class GitTargetMissing extends ImgbuilderError {
  constructor(
    readonly target: string,
    message: string,
  ) {
    super(message);
  }
}

/** The remote refused the credentials (or asked for some). */
export class GitRemoteAuthFailed extends ImgbuilderError {}

/** The remote says there is no such repository. */
export class GitRemoteNotFound extends ImgbuilderError {}

/** The remote cannot be reached, or failed otherwise. */
export class GitRemoteUnavailable extends ImgbuilderError {}

/** This server resolves as many remotes at once as it may (IMGBUILDER_LS_REMOTE_CONCURRENCY). */
export class GitResolverBusy extends ImgbuilderError {
  constructor(
    readonly limit: number,
    message: string,
  ) {
    super(message);
  }
}

// Builds

/** No build of that id or ref is known (or the caller's token does not grant it). */
export class BuildNotFound extends ImgbuilderError {
  constructor(
    readonly buildId?: string,
    message = 'build not found',
  ) {
    super(message);
  }
}

/** A supervisor terminal other than the one the log token grants (the build's own). */
export class TerminalNotFound extends ImgbuilderError {
  constructor(
    readonly alias: string,
    message: string,
  ) {
    super(message);
  }
}

/** The build's log is gone from object storage (bucket lifecycle). */
export class BuildLogExpired extends ImgbuilderError {
  constructor(
    readonly buildId: string,
    message: string,
  ) {
    super(message);
  }
}

/** Too many builds are waiting (IMGBUILDER_MAX_QUEUED_BUILDS). */
export class QueueFull extends ImgbuilderError {
  constructor(
    readonly queued: number,
    readonly limit: number,
    message: string,
  ) {
    super(message);
  }
}

/** One caller has IMGBUILDER_MAX_QUEUED_PER_CALLER builds waiting already. */
export class CallerQueueFull extends QueueFull {
  constructor(
    /** The caller's id (caller.ts), as the build's triggered_by records it. */
    readonly caller: string,
    queued: number,
    limit: number,
    message: string,
  ) {
    super(queued, limit, message);
  }
}

/** Cancel of a build that has already ended (other than by a cancel): there is nothing to stop. */
export class BuildAlreadyEnded extends ImgbuilderError {
  constructor(
    readonly buildId: string,
    readonly state: string,
    message: string,
  ) {
    super(message);
  }
}

/** The caller may not cancel this build: a builder's caller cancels only the builds attributed to it. */
export class CancelNotPermitted extends ImgbuilderError {
  constructor(
    readonly caller: string,
    message: string,
  ) {
    super(message);
  }
}

/** The terminal message of a cancelled build; waiters, logs and the dashboard all show it. */
export const cancelMessage = (by: string) => `build cancelled by ${by}`;

/** Why a worker stopped a build: someone cancelled it (the build's failure message names who). */
export class BuildCancelled extends ImgbuilderError {
  constructor(readonly by: string) {
    super(cancelMessage(by));
  }
}

/** A build ended without its workspace image in the registry (REFERENCE.md: checked again after success). */
export class WorkspaceImageMissing extends ImgbuilderError {
  constructor(
    readonly ref: string,
    message = 'image build did not produce a workspace image',
  ) {
    super(message);
  }
}

/** The job's sealed secrets cannot be opened or do not belong to it: the build cannot run as asked. */
export class SecretsUnsealable extends ImgbuilderError {}

/** The shared build state (Redis) is unreachable or lost what it held: the caller retries or calls Build again. */
export class BuildStateUnavailable extends ImgbuilderError {}

// Storage and uploads

/** The object store did not answer, or refused a write. */
export class StorageUnavailable extends ImgbuilderError {
  constructor(message: string, cause?: unknown) {
    super(message, { cause });
  }
}

/** This server's disk is full. */
export class StorageFull extends ImgbuilderError {}

/** An upload is larger than IMGBUILDER_MAX_UPLOAD_BYTES. */
export class UploadTooLarge extends ImgbuilderError {
  constructor(
    readonly limit: number,
    message: string,
  ) {
    super(message);
  }
}

/** The server is receiving as many uploads, or bytes, as it may at once. */
export class UploadCapacityReached extends ImgbuilderError {
  constructor(
    readonly setting: 'IMGBUILDER_MAX_CONCURRENT_UPLOADS' | 'IMGBUILDER_UPLOAD_DISK_BYTES',
    message: string,
  ) {
    super(message);
  }
}

/** An upload took too long, or went quiet. */
export class UploadTimedOut extends ImgbuilderError {}

/** The client went away during an upload. */
export class UploadCancelled extends ImgbuilderError {}

// The operator's settings

/** Settings (environment, tokens file) that do not parse; one problem a line, each naming what it is about. */
export class ConfigError extends ImgbuilderError {}

// Access

/** No access token, or one the tokens file does not list. */
export class AccessTokenRejected extends ImgbuilderError {}

/** The token is valid but its role is below what the rpc needs. */
export class RoleInsufficient extends ImgbuilderError {
  constructor(
    readonly caller: string,
    readonly need: string,
    message: string,
  ) {
    super(message);
  }
}

/** The request asks for the installation's registry credentials, and its token may not use them (installationAuth). */
export class InstallationAuthDenied extends ImgbuilderError {}

/** The health service was asked about a service this server does not run. */
export class UnknownService extends ImgbuilderError {
  constructor(
    readonly service: string,
    message: string,
  ) {
    super(message);
  }
}
