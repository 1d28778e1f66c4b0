import { posix } from 'node:path';
import type { BuildSourceDockerfile, GitInitializer, WorkspaceInitializer } from '@imgbuilder/proto';
import { CloneTargetMode, GitAuthMethod } from '@imgbuilder/proto';
import { InvalidRequest } from '@imgbuilder/common/errors';
import { forEachInitializer } from '@imgbuilder/common/initializers';
import { checkDownloadUrl, checkGitConfig, checkHttpUrl, checkSnapshotSource, checkSourceUrl, hasGitPart, parseSourceUrl, type SnapshotPolicy } from '@imgbuilder/common/source-policy';
import { checkResolvedUrl } from '@imgbuilder/common/fetch-policy';
import { quote } from '@imgbuilder/common/client-text';

/** What a Dockerfile source may hold and reach. */
export interface SourceLimits {
  allowLocalSources: boolean;
  /** IMGBUILDER_MAX_INITIALIZERS, IMGBUILDER_MAX_COMPOSITE_DEPTH, IMGBUILDER_MAX_DOWNLOAD_FILES. */
  maxInitializers: number;
  maxCompositeDepth: number;
  maxDownloadFiles: number;
  snapshots: SnapshotPolicy;
}

/**
 * Refuses (INVALID_ARGUMENT) a Dockerfile source (`root`: its initializer) the service will not build: paths outside
 * the context, a tree past the caps, initializers it does not support or sources outside the policy, checkouts into
 * directories written before.
 */
export async function checkDockerfileSource(file: BuildSourceDockerfile, root: WorkspaceInitializer, cfg: SourceLimits): Promise<void> {
  checkRelativePath('dockerfile_path', file.dockerfilePath);
  checkRelativePath('context_path', file.contextPath);
  checkShape(root, cfg);
  checkInitializers(root, cfg);
  checkCheckoutsGoIntoNewDirectories(root);
  await checkResolvedSources(root, cfg.allowLocalSources);
}

/**
 * Caps on the request's shape, checked before anything else looks at the tree: each git initializer may cost an
 * ls-remote process here and a clone on the worker, and every check below recurses over the tree.
 */
function checkShape(root: WorkspaceInitializer, cfg: SourceLimits): void {
  const { maxInitializers, maxCompositeDepth, maxDownloadFiles } = cfg;
  let count = 0;
  const counted = (n: number) => {
    count += n;
    if (count > maxInitializers) throw new InvalidRequest(`build source has more than ${maxInitializers} initializers (IMGBUILDER_MAX_INITIALIZERS=${maxInitializers})`);
  };
  forEachInitializer(root, (init, depth) => {
    counted(1);
    const spec = init.spec;
    if (spec?.$case === 'composite') {
      // Thrown before the walk descends into the children.
      if (depth >= maxCompositeDepth) throw new InvalidRequest(`composite initializers nest more than ${maxCompositeDepth} levels deep (IMGBUILDER_MAX_COMPOSITE_DEPTH=${maxCompositeDepth})`);
    } else if (spec?.$case === 'prebuild') {
      counted(spec.prebuild.git.length);
    } else if (spec?.$case === 'download' && spec.download.files.length > maxDownloadFiles) {
      throw new InvalidRequest(`a download initializer lists ${spec.download.files.length} files, more than IMGBUILDER_MAX_DOWNLOAD_FILES=${maxDownloadFiles}`);
    }
  });
}

function checkInitializers(root: WorkspaceInitializer, cfg: SourceLimits): void {
  forEachInitializer(root, (init) => checkInitializer(init, cfg));
}

/** One initializer, not its children (checkInitializers walks the tree). */
function checkInitializer(init: WorkspaceInitializer, cfg: SourceLimits): void {
  const spec = init.spec;
  if (!spec) throw new InvalidRequest('build source is missing: an initializer is empty');
  switch (spec.$case) {
    case 'backup':
      throw new InvalidRequest('the backup initializer is not supported: imgbuilder has no workspace backups; use git, download, snapshot or composite');
    case 'git':
      checkGit(spec.git, cfg.allowLocalSources);
      return;
    case 'download':
      checkRelativePath('download target_location', spec.download.targetLocation);
      checkNoGitPart('download target_location', spec.download.targetLocation);
      for (const [i, f] of spec.download.files.entries()) {
        checkDownloadUrl(f.url, 'download url', cfg.allowLocalSources);
        // Messages name files, not URLs: download URLs often carry tokens.
        if (!f.filePath) throw new InvalidRequest(`download #${i + 1}: file_path is empty`);
        checkRelativePath('download file_path', posix.join(spec.download.targetLocation || '.', f.filePath));
        checkNoGitPart('download file_path', f.filePath);
        if (!/^sha256:[a-f0-9]{64}$/.test(f.digest)) throw new InvalidRequest(`download of ${f.filePath}: digest must be sha256:<64 hex digits>`);
      }
      return;
    case 'composite':
      return;
    case 'prebuild':
      // A missing snapshot makes the worker fall back to git (REFERENCE.md); one outside the allowed sources is refused.
      for (const g of spec.prebuild.git) checkGit(g, cfg.allowLocalSources);
      if (spec.prebuild.prebuild?.snapshot) checkSnapshotSource(spec.prebuild.prebuild.snapshot, cfg.snapshots);
      return;
    case 'snapshot':
      checkSnapshot(spec.snapshot.snapshot, spec.snapshot.fromVolumeSnapshot, cfg.snapshots);
      return;
    case 'empty':
      return;
  }
}

/**
 * The fetch policy after DNS, for every URL the worker will fetch: a host name none of whose addresses the policy
 * allows is the caller's to fix (INVALID_ARGUMENT), not a build to start. The worker checks again when it fetches.
 */
async function checkResolvedSources(root: WorkspaceInitializer, allowLocal: boolean): Promise<void> {
  const checks: Promise<void>[] = [];
  const check = (url: string, what: string, showPath = true) => {
    if (!(allowLocal && parseSourceUrl(url).kind === 'local')) checks.push(checkResolvedUrl(url, what, { showPath }));
  };
  const checkGitUrls = (git: GitInitializer) => {
    check(git.remoteUri, 'git remote_uri');
    if (git.config?.authentication === GitAuthMethod.BASIC_AUTH_OTS) check(git.config.authOts, 'git auth_ots', false);
  };
  forEachInitializer(root, (init) => {
    const spec = init.spec;
    if (spec?.$case === 'git') checkGitUrls(spec.git);
    else if (spec?.$case === 'prebuild') spec.prebuild.git.forEach(checkGitUrls);
    else if (spec?.$case === 'download') for (const f of spec.download.files) check(f.url, 'download url');
  });
  await Promise.all(checks);
}

function checkGit(git: GitInitializer, allowLocal: boolean): void {
  if (!git.remoteUri) throw new InvalidRequest('git initializer has no remote_uri');
  checkSourceUrl(git.remoteUri, 'git remote_uri', allowLocal);
  if (git.upstreamRemoteUri) checkSourceUrl(git.upstreamRemoteUri, 'git upstream_Remote_uri', allowLocal);
  if (git.config?.authentication === GitAuthMethod.BASIC_AUTH_OTS) {
    if (!git.config.authOts) throw new InvalidRequest('git authentication BASIC_AUTH_OTS needs auth_ots');
    checkHttpUrl(git.config.authOts, 'git auth_ots', { showPath: false });
  }
  checkGitConfig(git.config?.customConfig);
  checkRelativePath('git checkout_location', git.checkoutLocation);
  if ((git.targetMode === CloneTargetMode.REMOTE_COMMIT || git.targetMode === CloneTargetMode.REMOTE_BRANCH || git.targetMode === CloneTargetMode.LOCAL_BRANCH) && !git.cloneTaget) {
    throw new InvalidRequest(`git initializer: clone_taget is required for target mode ${CloneTargetMode[git.targetMode]}`);
  }
  if (git.cloneTaget.startsWith('-')) throw new InvalidRequest('git initializer: clone_taget must not start with "-"');
}

/** Snapshots are tars in object storage: `s3://bucket/key` or a key of the default bucket, never a build log. */
function checkSnapshot(name: string, fromVolume: boolean, policy: SnapshotPolicy): void {
  if (!name) throw new InvalidRequest('snapshot initializer names no snapshot');
  if (fromVolume) throw new InvalidRequest('volume snapshots are not supported: imgbuilder restores tar snapshots from object storage (s3://bucket/key or a key in the default bucket)');
  checkSnapshotSource(name, policy);
}

/** `.git` comes from git initializers only (see hasGitPart). */
function checkNoGitPart(what: string, p: string): void {
  if (hasGitPart(p)) throw new InvalidRequest(`${what} ${quote(p)} has a .git part: git metadata may only come from a git initializer`);
}

/**
 * A git checkout must go into an empty or new directory: git reads the config, hooks and attributes it finds there.
 * Here: no earlier download or checkout of the request writes at or under a later checkout_location. (What a
 * snapshot holds is only known on the worker, which checks the directory again before the checkout.)
 */
function checkCheckoutsGoIntoNewDirectories(root: WorkspaceInitializer): void {
  const written: string[] = [];
  const norm = (p: string) => normalizeRequestPath(p).replace(/\/+$/, '') || '.';
  const under = (p: string, dir: string) => dir === '.' || p === dir || p.startsWith(`${dir}/`);
  const checkout = (g: GitInitializer) => {
    const dir = norm(g.checkoutLocation);
    const clash = written.find((w) => under(w, dir));
    if (clash !== undefined) {
      throw new InvalidRequest(
        `git checkout_location ${quote(g.checkoutLocation || '.')} is not empty: an earlier initializer writes ${quote(clash)}; a git checkout must go into an empty or new directory`,
      );
    }
    written.push(dir);
  };
  forEachInitializer(root, (init) => {
    const spec = init.spec;
    if (spec?.$case === 'git') checkout(spec.git);
    else if (spec?.$case === 'prebuild') written.push(...spec.prebuild.git.map((g) => norm(g.checkoutLocation)));
    else if (spec?.$case === 'download') written.push(...spec.download.files.map((f) => norm(posix.join(spec.download.targetLocation || '.', f.filePath))));
  });
}

/** Paths from the request must stay inside the build context. Empty is fine (it means the default). */
export function checkRelativePath(what: string, p: string): void {
  if (!p) return;
  if (p.includes('\0')) throw new InvalidRequest(`${what} contains a NUL byte`);
  if (posix.isAbsolute(p) || /^[a-zA-Z]:[\\/]/.test(p)) throw new InvalidRequest(`${what} ${quote(p)} must be relative to the build context, not absolute`);
  const n = normalizeRequestPath(p);
  if (n === '..' || n.startsWith('../')) throw new InvalidRequest(`${what} ${quote(p)} points outside the build context`);
}

/** A request path in posix form, normalised; empty becomes `.`. */
function normalizeRequestPath(p: string): string {
  return posix.normalize(p.replace(/\\/g, '/'));
}
