import { describe, expect, it } from 'vitest';
import { status } from '@grpc/grpc-js';
import { pino } from 'pino';
import * as errors from '@imgbuilder/common/errors';
import * as apiErrors from '../../apps/api/src/errors.js';
import { CONVERTED_BELOW, GRPC_STATUS, toServiceError } from '../../apps/api/src/grpc/grpc-status.js';

const {
  AccessTokenRejected,
  BuildAlreadyEnded,
  BuildCancelled,
  CallerQueueFull,
  CancelNotPermitted,
  FetchRefused,
  BuildLogExpired,
  BuildNotFound,
  BuildStateUnavailable,
  ConfigError,
  ContextLimitExceeded,
  ContextSymlinkEscape,
  GitError,
  GitRemoteAuthFailed,
  GitRemoteNotFound,
  GitRemoteUnavailable,
  GitResolverBusy,
  GitTargetMissing,
  ImageNotFound,
  ImageRefInvalid,
  ImgbuilderError,
  InternalError,
  InvalidRequest,
  LimiterBusyError,
  QueueFull,
  RegistryAuthFailed,
  RegistryFailed,
  RegistryHttpError,
  RegistryMisconfigured,
  RegistryUnavailable,
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
} = errors;
const { HttpError, SlowClientError } = apiErrors;

/** Records what the mapper logs, so a test can see the unexpected error went to the log and not to the caller. */
function capturingLogger() {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

// One instance of each error, as the code raises it, with the status callers have always seen for it.
const cases: [Error, status][] = [
  [new InvalidRequest('build source is missing'), status.INVALID_ARGUMENT],
  [new ImageRefInvalid('Not A Ref', 'invalid reference format', 'cannot parse image ref "Not A Ref": invalid reference format'), status.INVALID_ARGUMENT],
  [new SourceRefused('git remote_uri', 'git remote_uri: host "-x" looks like a command-line option and is refused', '-x'), status.INVALID_ARGUMENT],
  [new GitTargetMissing('main', 'git remote has no branch or tag "main"'), status.INVALID_ARGUMENT],
  [new FetchRefused('download url', 'http://localhost:2375/images/x/get', '127.0.0.1', 'download url: http://localhost:2375/images/x/get is refused by the fetch policy (localhost resolves to 127.0.0.1; 127.0.0.1 is loopback; IMGBUILDER_FETCH_ALLOW re-allows an address, a CIDR or a host:port)'), status.INVALID_ARGUMENT],
  [new AccessTokenRejected('the access token is not valid (not in the service\'s tokens file)'), status.UNAUTHENTICATED],
  [new RoleInsufficient('ci', 'builder', 'token "ci" has role viewer; Build needs role builder or above'), status.PERMISSION_DENIED],
  [new InstallationAuthDenied('token "ci" may not use the installation\'s registry credentials (total.allow_all)'), status.PERMISSION_DENIED],
  [new UnknownService('no.such.Service', 'unknown service "no.such.Service"'), status.NOT_FOUND],
  [new ImageNotFound('127.0.0.1:5000/a:1', 'cannot resolve image 127.0.0.1:5000/a:1: not found'), status.NOT_FOUND],
  [new RegistryAuthFailed('127.0.0.1:5000', 401, 'cannot resolve image 127.0.0.1:5000/a:1: the registry refused the credentials (401)'), status.UNAUTHENTICATED],
  [new RegistryUnavailable('127.0.0.1:1', 'cannot resolve image 127.0.0.1:1/a:1: registry 127.0.0.1:1 is unreachable (ECONNREFUSED)'), status.UNAVAILABLE],
  [new RegistryFailed('127.0.0.1:5000', 'cannot resolve image 127.0.0.1:5000/a:1: registry answered 500'), status.INTERNAL],
  [new RegistryMisconfigured('r.test', 'registry r.test names a token service that is not a URL'), status.FAILED_PRECONDITION],
  [new GitRemoteNotFound('cannot read git remote: Repository not found'), status.NOT_FOUND],
  [new GitRemoteAuthFailed('cannot read git remote: Authentication failed'), status.UNAUTHENTICATED],
  [new GitRemoteUnavailable('cannot reach git remote: timed out'), status.UNAVAILABLE],
  [new GitResolverBusy(4, 'too many git remotes are being resolved at once (IMGBUILDER_LS_REMOTE_CONCURRENCY=4); retry shortly'), status.UNAVAILABLE],
  [new BuildNotFound(), status.NOT_FOUND],
  [new BuildLogExpired('b1', 'build log not found in object storage (it may have expired under the bucket lifecycle policy)'), status.NOT_FOUND],
  [new TerminalNotFound('x', "terminal x not found: the token grants build b1's terminal"), status.NOT_FOUND],
  [new QueueFull(3, 3, 'build queue is full (3 builds waiting, limit IMGBUILDER_MAX_QUEUED_BUILDS=3); retry later'), status.RESOURCE_EXHAUSTED],
  [new BuildStateUnavailable('the build record vanished; retry'), status.UNAVAILABLE],
  [new CallerQueueFull('alice', 3, 3, 'caller "alice" has 3 builds waiting, the limit per caller (IMGBUILDER_MAX_QUEUED_PER_CALLER=3); retry once some have started'), status.RESOURCE_EXHAUSTED],
  [new BuildAlreadyEnded('b1', 'done_success', 'build b1 has already ended (done_success); only queued or running builds can be cancelled'), status.FAILED_PRECONDITION],
  [new CancelNotPermitted('ci', 'token "ci" (role builder) may cancel only the builds it triggered; build b1 is not one of them (role admin may cancel any)'), status.PERMISSION_DENIED],
  [new BuildCancelled('ops'), status.CANCELLED],
  [new HttpError(400, 'malformed percent-encoding in the path'), status.INVALID_ARGUMENT],
  [new SlowClientError(5000, 'client read nothing for 5s; stream dropped (reconnect to resume: Logs replays from the start)'), status.RESOURCE_EXHAUSTED],
  [new WorkspaceImageMissing('r/ws:1'), status.INTERNAL],
  [new SecretsUnsealable('sealed secrets do not belong to this job'), status.FAILED_PRECONDITION],
  [new StorageUnavailable('the object store did not answer within 10 ms (IMGBUILDER_S3_TIMEOUT); retry later'), status.UNAVAILABLE],
  [new StorageFull('the server ran out of disk space for uploads; retry later'), status.RESOURCE_EXHAUSTED],
  [new UploadTooLarge(1024, "upload is larger than the server's limit of 1 KiB (IMGBUILDER_MAX_UPLOAD_BYTES); shrink the context with .dockerignore"), status.RESOURCE_EXHAUSTED],
  [new UploadCapacityReached('IMGBUILDER_MAX_CONCURRENT_UPLOADS', 'the server is receiving 2 uploads, its limit (IMGBUILDER_MAX_CONCURRENT_UPLOADS); retry shortly'), status.RESOURCE_EXHAUSTED],
  [new UploadTimedOut('upload sent nothing for 120s'), status.DEADLINE_EXCEEDED],
  [new UploadCancelled('upload cancelled'), status.CANCELLED],
  [new ConfigError('invalid configuration:\n  IMGBUILDER_TOKENS_FILE: cannot read /x as JSON: ENOENT'), status.FAILED_PRECONDITION],
];

// Faults of common's parts, which the API converts where it calls them; one that slips through is answered INTERNAL.
const converted: Error[] = [
  new GitError('git ls-remote failed: fatal: unable to access https://x/: secret detail'),
  new LimiterBusyError('waited 10 ms for one of 1 slots'),
  new RegistryHttpError(418, 'registry answered 418'),
  new SealedForOtherUse(),
  new ContextSymlinkEscape('a', '/etc', 'symlink a points outside the build context (/etc)'),
  new ContextLimitExceeded('files', 3),
];

/** Every error class a module exports (abstract bases included: they are left out by the caller). */
function errorClasses(module: Record<string, unknown>): (abstract new (...args: never[]) => Error)[] {
  return Object.values(module).filter((v): v is abstract new (...args: never[]) => Error => typeof v === 'function' && v.prototype instanceof Error);
}

describe('grpc-status: the one table from imgbuilder errors to gRPC statuses', () => {
  it('answers each error with its status and its own message', () => {
    const { log, lines } = capturingLogger();
    for (const [err, code] of cases) {
      const e = toServiceError(err, log, 'Test');
      expect({ name: err.constructor.name, code: status[e.code], details: e.details }).toEqual({ name: err.constructor.name, code: status[code], details: err.message });
    }
    expect(lines).toEqual([]);
  });

  it('lists every error class the API can meet (common\'s and the API\'s own), and covers each in this test', () => {
    const exported = [...errorClasses(errors), ...errorClasses(apiErrors)].filter((cls) => cls !== ImgbuilderError && cls !== InternalError);
    expect(exported.length).toBeGreaterThan(30);
    for (const cls of exported) expect(GRPC_STATUS.has(cls), cls.name).toBe(true);
    expect(new Set([...cases.map(([e]) => e.constructor), ...converted.map((e) => e.constructor)])).toEqual(new Set(GRPC_STATUS.keys()));
    expect(converted.every((e) => e instanceof InternalError && GRPC_STATUS.get(e.constructor as typeof InternalError) === CONVERTED_BELOW)).toBe(true);
  });

  it('answers a fault that should have been converted below as INTERNAL, logged, without its message', () => {
    const { log, lines } = capturingLogger();
    for (const err of converted) expect(toServiceError(err, log, 'Build')).toMatchObject({ code: status.INTERNAL, details: 'internal error; see the API server log' });
    expect(lines).toHaveLength(converted.length);
  });

  it('answers INTERNAL for errors that are not imgbuilder\'s, logging them but not sending their message', () => {
    const { log, lines } = capturingLogger();
    const secret = 'TypeError at /srv/app/x.ts: token=hunter2';
    for (const err of [new TypeError(secret), new Error(secret), secret, { message: secret }, undefined]) {
      const e = toServiceError(err, log, 'Build');
      expect(e.code).toBe(status.INTERNAL);
      expect(e.details).toBe('internal error; see the API server log');
      expect(e.message).not.toContain('hunter2');
    }
    expect(lines).toHaveLength(5);
    expect(lines[0]).toMatchObject({ method: 'Build', msg: 'unexpected error' });
  });

  it('an unlisted subclass of ImgbuilderError is not leaked either', () => {
    class Unlisted extends ImgbuilderError {}
    const { log } = capturingLogger();
    expect(toServiceError(new Unlisted('details only the server should see'), log, 'Build')).toMatchObject({ code: status.INTERNAL, details: 'internal error; see the API server log' });
  });

  it('cuts long messages to what a status trailer can carry', () => {
    const { log } = capturingLogger();
    const e = toServiceError(new InvalidRequest(`x${'y'.repeat(5000)}`), log, 'Build');
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(Buffer.byteLength(e.details)).toBeLessThanOrEqual(1024);
  });
});
