import { registryAuthHint } from '@imgbuilder/common/registry-auth';
import { SourceRefused, type ContextLimitExceeded } from '@imgbuilder/common/errors';

// The worker's own errors, all here: what ends a build, and who caused it. report/failure-message.ts turns each into
// the build's done_failure message in one place (the user's fault or the service's); none of them reaches the API,
// which reads only that message. Common's errors (@imgbuilder/common/errors) are used as they are.

// The build source (initializers, the context, the Dockerfile as text)

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

/** A write into the build context that would leave it (a symlink or `..` on the way); becomes a SourceError. */
export class ContextWriteError extends Error {
  override name = 'ContextWriteError';
}

/** A Dockerfile the engine would not parse either; its message says where. Becomes a SourceError. */
export class DockerfileSyntaxError extends Error {
  override name = 'DockerfileSyntaxError';
}

/** A source-policy refusal ends the build; their message is already user-facing. */
export function asSource<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof SourceRefused) throw new SourceError(err.message);
    throw err;
  }
}

/** A context cap crossed, in the worker's words: the walker's wording and the setting that sets the cap. */
export function contextLimitMessage(err: ContextLimitExceeded): string {
  return `${err.message} (${err.limit === 'files' ? 'IMGBUILDER_MAX_CONTEXT_FILES' : 'IMGBUILDER_MAX_CONTEXT_BYTES'})`;
}

// The Docker engine and the build on it

/** The engine failed a call, or sent what the worker cannot read: the service's fault unless a subclass says. */
export class EngineError extends Error {
  override name = 'EngineError';
}

/**
 * The engine refused the user's build or image: a failing step, a Dockerfile it cannot parse, a `FROM` or source
 * image it cannot pull. Gitpod counts these as the user's fault (see report/failure-message.ts).
 */
export class UserBuildError extends EngineError {
  override name = 'UserBuildError';
}

/** The engine could not be reached at all. */
export class EngineUnavailableError extends EngineError {
  override name = 'EngineUnavailableError';
}

/** The engine's BuildKit stopped sending the build's progress (see BUILDKIT_STALLED); the build was cancelled. */
export class BuildkitStalled extends EngineError {
  override name = 'BuildkitStalled';
}

/** The engine's build steps could reach what the egress policy forbids: this worker runs no build. */
export class EgressPolicyError extends EngineError {
  override name = 'EgressPolicyError';
}

// The build sandbox (builder/build-sandbox.ts)

/** The limits a BuildLimitError names, as the settings gave them. */
interface LimitSettings {
  memory: { text: string };
  pids: number;
  disk: { text: string };
}

/** A build crossed one of its resource limits; the message names the setting and its value. */
export class BuildLimitError extends UserBuildError {
  override name = 'BuildLimitError';
  constructor(kind: 'memory' | 'process' | 'disk', limits: LimitSettings) {
    const [setting, value] =
      kind === 'memory' ? ['IMGBUILDER_BUILD_MEMORY', limits.memory.text] : kind === 'process' ? ['IMGBUILDER_BUILD_PIDS', String(limits.pids)] : ['IMGBUILDER_BUILD_DISK', limits.disk.text];
    super(`build exceeded its ${kind} limit (${setting}=${value})`);
  }
}

/**
 * The worker could not hold a build to its limits (a step it could not move into the build's cgroup, or one it could
 * not tell the build of): the build fails rather than run unbounded. Not the user's doing.
 */
export class BuildSandboxError extends EngineError {
  override name = 'BuildSandboxError';
}

/** A pull the registry refused gets told how to pass credentials (BuildRegistryAuth), in the same failure. */
export function withRegistryAuthHint(err: unknown): never {
  const hint = err instanceof EngineError ? registryAuthHint(err.message) : undefined;
  // Same error, longer message: whether the user caused it rides on its class.
  if (hint) (err as Error).message += `; ${hint}`;
  throw err;
}
