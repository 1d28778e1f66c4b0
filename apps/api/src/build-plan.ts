import { posix } from 'node:path';
import type { BuildRegistryAuth, BuildSource, WorkspaceInitializer, GitInitializer } from '@imgbuilder/proto';
import { CloneTargetMode, GitAuthMethod } from '@imgbuilder/proto';
import { invalidArgument } from '@imgbuilder/common/errors';
import { formatImageRef, parseImageRef, repositoryOf } from '@imgbuilder/common/image-ref';
import { dockerfileBaseRef, forEachGit, workspaceRef } from '@imgbuilder/common/refs';
import type { RegistryClient } from '@imgbuilder/common/registry-client';
import { RegistryAuthPolicy, type CredentialTable } from '@imgbuilder/common/registry-auth';
import { checkDownloadUrl, checkGitConfig, checkHttpUrl, checkSourceUrl } from '@imgbuilder/common/source-policy';
import type { GitRemoteResolver } from './git-remote-resolver.js';

/** What a request turns into: the refs, and how the worker produces the workspace image. */
export interface BuildPlan {
  ref: string;
  baseRef: string;
  plan: 'dockerfile' | 'copy';
  /** For `copy`: the digest-form image the workspace image is copied from. */
  copyFrom?: string;
  /** Commits of mutable git targets used in the base-ref hash, by initializer position. */
  resolvedCommits?: Record<string, string>;
  policy: RegistryAuthPolicy;
  /** Why this plan replaced the one the request asked for (written at the top of the build log). */
  fallbackNote?: string;
}

export interface PlannerConfig {
  baseRepository: string;
  workspaceRepository: string;
  installation: CredentialTable;
  allowLocalSources: boolean;
}

/** Validates a build source and computes its refs (REFERENCE.md "Refs"); fetches nothing but digests and commits. */
export class BuildPlanner {
  constructor(
    private readonly cfg: PlannerConfig,
    private readonly registry: RegistryClient,
    private readonly git: GitRemoteResolver,
  ) {}

  policyFor(auth: BuildRegistryAuth | undefined): RegistryAuthPolicy {
    return new RegistryAuthPolicy(auth, this.cfg.installation, this.cfg);
  }

  /** Resolves a user's image to `<repository>@sha256:…` (ResolveBaseImage). */
  async resolveImage(ref: string, policy: RegistryAuthPolicy, retry: boolean): Promise<string> {
    const parsed = parseImageRef(ref);
    const digest = await this.registry.resolveDigest(parsed, { credentials: policy.credentialsFor(parsed.domain), retry });
    return `${repositoryOf(parsed)}@${digest}`;
  }

  async plan(source: BuildSource | undefined, auth: BuildRegistryAuth | undefined, retry: boolean): Promise<BuildPlan> {
    const policy = this.policyFor(auth);
    const from = source?.from;
    if (!from) throw invalidArgument('build source is missing');
    if (from.$case === 'ref') {
      if (!from.ref.ref.trim()) throw invalidArgument('build source is missing: the ref source names no image');
      const baseRef = await this.resolveImage(from.ref.ref, policy, retry);
      return { ref: workspaceRef(baseRef, this.cfg.workspaceRepository), baseRef, plan: 'copy', copyFrom: baseRef, policy };
    }
    const file = from.file;
    if (!file.source?.spec) throw invalidArgument('build source is missing: the Dockerfile source has no initializer');
    checkRelativePath('dockerfile_path', file.dockerfilePath);
    checkRelativePath('context_path', file.contextPath);
    this.checkInitializer(file.source);
    const resolvedCommits = file.dockerfileVersion ? {} : await this.resolveMutableTargets(file.source);
    const baseRef = dockerfileBaseRef(file, this.cfg.baseRepository, { resolvedCommits });
    return { ref: workspaceRef(baseRef, this.cfg.workspaceRepository), baseRef, plan: 'dockerfile', resolvedCommits, policy };
  }

  /**
   * Plan for `base_image_name_resolved`: the workspace image is a copy of that (already built) base image, named
   * after the base as given, so the workspace image of an earlier Dockerfile build is found again. The base is
   * pinned to a digest that exists only when a build is needed (the caller sets `copyFrom` then).
   */
  async planFromResolvedBase(baseImage: string, policy: RegistryAuthPolicy): Promise<BuildPlan> {
    const parsed = parseImageRef(baseImage);
    const baseRef = formatImageRef(parsed);
    return { ref: workspaceRef(baseRef, this.cfg.workspaceRepository), baseRef, plan: 'copy', policy };
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

  private checkInitializer(init: WorkspaceInitializer): void {
    const spec = init.spec;
    if (!spec) throw invalidArgument('build source is missing: an initializer is empty');
    switch (spec.$case) {
      case 'backup':
        throw invalidArgument('the backup initializer is not supported: imgbuilder has no workspace backups; use git, download, snapshot or composite');
      case 'git':
        checkGit(spec.git, this.cfg.allowLocalSources);
        return;
      case 'download':
        checkRelativePath('download target_location', spec.download.targetLocation);
        for (const [i, f] of spec.download.files.entries()) {
          checkDownloadUrl(f.url, 'download url', this.cfg.allowLocalSources);
          // Messages name files, not URLs: download URLs often carry tokens.
          if (!f.filePath) throw invalidArgument(`download #${i + 1}: file_path is empty`);
          checkRelativePath('download file_path', posix.join(spec.download.targetLocation || '.', f.filePath));
          if (!/^sha256:[a-f0-9]{64}$/.test(f.digest)) throw invalidArgument(`download of ${f.filePath}: digest must be sha256:<64 hex digits>`);
        }
        return;
      case 'composite':
        for (const c of spec.composite.initializer) this.checkInitializer(c);
        return;
      case 'prebuild':
        // A bad snapshot name makes the worker fall back to git (REFERENCE.md), so only the git targets must be valid.
        for (const g of spec.prebuild.git) checkGit(g, this.cfg.allowLocalSources);
        return;
      case 'snapshot':
        checkSnapshot(spec.snapshot.snapshot, spec.snapshot.fromVolumeSnapshot);
        return;
      case 'empty':
        return;
    }
  }
}

function checkGit(git: GitInitializer, allowLocal: boolean): void {
  if (!git.remoteUri) throw invalidArgument('git initializer has no remote_uri');
  checkSourceUrl(git.remoteUri, 'git remote_uri', allowLocal);
  if (git.upstreamRemoteUri) checkSourceUrl(git.upstreamRemoteUri, 'git upstream_Remote_uri', allowLocal);
  if (git.config?.authentication === GitAuthMethod.BASIC_AUTH_OTS) {
    if (!git.config.authOts) throw invalidArgument('git authentication BASIC_AUTH_OTS needs auth_ots');
    checkHttpUrl(git.config.authOts, 'git auth_ots');
  }
  checkGitConfig(git.config?.customConfig);
  checkRelativePath('git checkout_location', git.checkoutLocation);
  if ((git.targetMode === CloneTargetMode.REMOTE_COMMIT || git.targetMode === CloneTargetMode.REMOTE_BRANCH || git.targetMode === CloneTargetMode.LOCAL_BRANCH) && !git.cloneTaget) {
    throw invalidArgument(`git initializer: clone_taget is required for target mode ${CloneTargetMode[git.targetMode]}`);
  }
  if (git.cloneTaget.startsWith('-')) throw invalidArgument('git initializer: clone_taget must not start with "-"');
}

/** Snapshots are tars in object storage: `s3://bucket/key` or a key of the default bucket, never a build log. */
function checkSnapshot(name: string, fromVolume: boolean): void {
  if (!name) throw invalidArgument('snapshot initializer names no snapshot');
  if (fromVolume) throw invalidArgument('volume snapshots are not supported: imgbuilder restores tar snapshots from object storage (s3://bucket/key or a key in the default bucket)');
  if (/^s3:/i.test(name) && !/^s3:\/\/[^/]+\/.+$/.test(name)) throw invalidArgument(`snapshot "${name}" must be s3://bucket/key or a key in the default bucket`);
  if (/^logs\//.test(name)) throw invalidArgument(`snapshot "${name}": keys under logs/ hold build logs, not snapshots`);
}

/** Paths from the request must stay inside the build context. Empty is fine (it means the default). */
export function checkRelativePath(what: string, p: string): void {
  if (!p) return;
  if (p.includes('\0')) throw invalidArgument(`${what} contains a NUL byte`);
  if (posix.isAbsolute(p) || /^[a-zA-Z]:[\\/]/.test(p)) throw invalidArgument(`${what} "${p}" must be relative to the build context, not absolute`);
  const n = posix.normalize(p.replace(/\\/g, '/'));
  if (n === '..' || n.startsWith('../')) throw invalidArgument(`${what} "${p}" points outside the build context`);
}
