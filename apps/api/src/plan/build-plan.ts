import type { BuildRegistryAuth, BuildRequest, BuildSource, WorkspaceInitializer } from '@imgbuilder/proto';
import { CloneTargetMode } from '@imgbuilder/proto';
import { ImageNotFound, ImageRefInvalid, InvalidRequest, RegistryAuthFailed, SourceRefused } from '@imgbuilder/common/errors';
import { formatImageRef, parseImageRef, repositoryOf } from '@imgbuilder/common/image-ref';
import { dockerfileBaseRef, forEachGit, workspaceRef } from '@imgbuilder/common/refs';
import type { RegistryClient } from '@imgbuilder/common/registry-client';
import { pushCredentials, RegistryAuthPolicy, type CredentialTable } from '@imgbuilder/common/registry-auth';
import type { Logger } from '@imgbuilder/common/logger';
import { inSpan } from '@imgbuilder/common/tracing';
import type { GitRemoteResolver } from './git-remote-resolver.js';
import { ImageExistence } from './image-existence.js';
import { checkDockerfileSource, type SourceLimits } from './source-checks.js';

/** What a request turns into: the refs, and how the worker produces the workspace image. */
export interface BuildPlan {
  ref: string;
  baseRef: string;
  /** `dockerfile`: build the base image from its source first; `copy`: the base image exists, only copy it. */
  kind: 'dockerfile' | 'copy';
  /** For `copy`: the digest-form image the workspace image is copied from. */
  copyFrom?: string;
  /** Commits of mutable git targets used in the base-ref hash, by initializer position. */
  resolvedCommits?: Record<string, string>;
  policy: RegistryAuthPolicy;
  /** Why this plan replaced the one the request asked for (written at the top of the build log). */
  fallbackNote?: string;
}

/** What a Build request comes to: its plan, and whether that plan's workspace image is there already. */
export interface PlannedBuild {
  plan: BuildPlan;
  /** The workspace image exists and no rebuild was asked for: there is nothing to build. */
  built: boolean;
}

/** How long a "the workspace image exists" answer is reused (see ImageExistence). */
const EXISTS_CACHE_MS = 5_000;

export interface PlannerConfig extends SourceLimits {
  baseRepository: string;
  workspaceRepository: string;
  installation: CredentialTable;
}

export interface PlannerDeps {
  registry: RegistryClient;
  git: GitRemoteResolver;
  log: Logger;
}

/** Validates a build source and computes its refs (REFERENCE.md "Refs"); fetches nothing but digests and commits. */
export class BuildPlanner {
  private readonly registry: RegistryClient;
  private readonly git: GitRemoteResolver;
  private readonly log: Logger;
  private readonly existence: ImageExistence;

  constructor(
    private readonly cfg: PlannerConfig,
    deps: PlannerDeps,
  ) {
    ({ registry: this.registry, git: this.git, log: this.log } = deps);
    const credentials = pushCredentials(cfg.installation, cfg.workspaceRepository);
    this.existence = new ImageExistence((ref) => inSpan('registry check', () => this.registry.exists(parseImageRef(ref), { credentials }), { attributes: { 'imgbuilder.image': ref } }), EXISTS_CACHE_MS);
  }

  policyFor(auth: BuildRegistryAuth | undefined): RegistryAuthPolicy {
    return new RegistryAuthPolicy(auth, this.cfg.installation, this.cfg);
  }

  /** Resolves a user's image to `<repository>@sha256:…` (ResolveBaseImage). */
  async resolveImage(ref: string, policy: RegistryAuthPolicy, retry: boolean): Promise<string> {
    const parsed = parseImageRef(ref);
    const digest = await inSpan('registry resolve', () => this.registry.resolveDigest(parsed, { credentials: policy.credentialsFor(parsed.domain), retry }), { attributes: { 'imgbuilder.image': ref } });
    return `${repositoryOf(parsed)}@${digest}`;
  }

  async plan(source: BuildSource | undefined, auth: BuildRegistryAuth | undefined, retry: boolean): Promise<BuildPlan> {
    const policy = this.policyFor(auth);
    const from = source?.from;
    if (!from) throw new InvalidRequest('build source is missing');
    if (from.$case === 'ref') {
      if (!from.ref.ref.trim()) throw new InvalidRequest('build source is missing: the ref source names no image');
      const baseRef = await this.resolveImage(from.ref.ref, policy, retry);
      return { ref: workspaceRef(baseRef, this.cfg.workspaceRepository), baseRef, kind: 'copy', copyFrom: baseRef, policy };
    }
    const file = from.file;
    if (!file.source?.spec) throw new InvalidRequest('build source is missing: the Dockerfile source has no initializer');
    await checkDockerfileSource(file, file.source, this.cfg);
    const resolvedCommits = file.dockerfileVersion ? {} : await this.resolveMutableTargets(file.source);
    const baseRef = dockerfileBaseRef(file, this.cfg.baseRepository, { resolvedCommits });
    return { ref: workspaceRef(baseRef, this.cfg.workspaceRepository), baseRef, kind: 'dockerfile', resolvedCommits, policy };
  }

  /** Whether the workspace image `ref` is in the registry (asked with the installation's push credentials). */
  workspaceImageExists(ref: string): Promise<boolean> {
    return this.existence.exists(ref);
  }

  /**
   * The plan of a Build request, and whether its workspace image exists already (a forced rebuild builds anyway).
   * With `base_image_name_resolved` the build starts from that base, or from the source when the base is gone.
   */
  async planBuild(req: BuildRequest): Promise<PlannedBuild> {
    if (req.baseImageNameResolved && !req.forceRebuild) return this.planOnResolvedBase(req);
    const plan = await this.plan(req.source, req.auth, req.useRetryClient);
    return { plan, built: !req.forceRebuild && (await this.workspaceImageExists(plan.ref)) };
  }

  /**
   * The workspace image is a copy of the (already built) base `base_image_name_resolved` names, and named after
   * that base as given, so the workspace image of an earlier Dockerfile build is found again. Only when it must be
   * built is the base pinned to a digest that exists; a base that is gone leaves the source to build from.
   */
  private async planOnResolvedBase(req: BuildRequest): Promise<PlannedBuild> {
    // The fast path builds from the given base, not the source; a request without one is still malformed.
    if (!req.source?.from) throw new InvalidRequest('build source is missing');
    const plan = await this.copyOf(req.baseImageNameResolved, this.policyFor(req.auth)).catch((err: unknown) => this.planFromSourceInstead(req, err));
    if (await this.workspaceImageExists(plan.ref)) return { plan, built: true };
    if (plan.kind !== 'copy' || plan.copyFrom) return { plan, built: false };
    try {
      // Named by tag or digest, the base may be gone since; Gitpod's builder then builds from the source too (its
      // server's restart path relies on it).
      plan.copyFrom = await this.resolveImage(plan.baseRef, plan.policy, req.useRetryClient);
      return { plan, built: false };
    } catch (err) {
      const fromSource = await this.planFromSourceInstead(req, err);
      return { plan: fromSource, built: await this.workspaceImageExists(fromSource.ref) };
    }
  }

  /** A plan to copy `baseImage` as it is named (async so that a name that does not parse rejects). */
  private async copyOf(baseImage: string, policy: RegistryAuthPolicy): Promise<BuildPlan> {
    const baseRef = formatImageRef(parseImageRef(baseImage));
    return { ref: workspaceRef(baseRef, this.cfg.workspaceRepository), baseRef, kind: 'copy', policy };
  }

  /**
   * base_image_name_resolved could not be used (`err`): plan the build from the request's source instead. A base
   * that is merely unreachable (registry down, rate-limited) is not "gone": that error stands, as it does when the
   * source itself cannot be planned. Gone means: its name does not parse or is refused, the image is not there, or
   * the registry will not let us read it.
   */
  private async planFromSourceInstead(req: BuildRequest, err: unknown): Promise<BuildPlan> {
    const gone = err instanceof ImageRefInvalid || err instanceof SourceRefused || err instanceof ImageNotFound || err instanceof RegistryAuthFailed;
    if (!gone) throw err;
    const plan = await this.plan(req.source, req.auth, req.useRetryClient).catch((sourceErr: unknown) => {
      this.log.debug({ err: (sourceErr as Error).message }, 'the source cannot replace base_image_name_resolved');
      throw err;
    });
    // One line in the build log, whatever the caller put in the field.
    plan.fallbackNote = `base image ${req.baseImageNameResolved} (base_image_name_resolved) cannot be used: ${(err as Error).message}; building from the source instead`.replace(/[\r\n\t\0]+/g, ' ');
    return plan;
  }

  /** Commits of every mutable git target in the source, by depth-first position (REFERENCE.md "Refs", README). */
  private async resolveMutableTargets(init: WorkspaceInitializer): Promise<Record<string, string>> {
    const pending: Promise<void>[] = [];
    const out: Record<string, string> = {};
    forEachGit(init, (git, index) => {
      if (git.targetMode === CloneTargetMode.REMOTE_COMMIT) return;
      pending.push(
        this.git.resolve(git).then((commit) => {
          if (commit) out[String(index)] = commit;
        }),
      );
    });
    await Promise.all(pending);
    return out;
  }
}
