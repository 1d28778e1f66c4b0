import { createHash } from 'node:crypto';
import type { BuildSourceDockerfile, GitInitializer, WorkspaceInitializer } from '@imgbuilder/proto';
import { InvalidRequest } from './errors.js';
import { forEachInitializer } from './initializers.js';

/** Version of the build process; part of every workspace ref so a process change yields new images. */
export const BUILD_PROCESS_VERSION = '2';

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/** Gitpod's manifest text: `Key: value\n` lines sorted by key, then one more `\n`. */
function manifest(entries: Record<string, string>): string {
  const keys = Object.keys(entries).sort();
  return keys.map((k) => `${k}: ${entries[k]}\n`).join('') + '\n';
}

export interface DockerfileRefOptions {
  /**
   * Commit a mutable git target (head, branch) resolves to right now. When given it replaces the clone target in
   * the hash, so a moved branch yields a new ref instead of serving a stale image.
   */
  resolvedCommit?: string;
  /**
   * The same for every git initializer of the source, by depth-first position (see forEachGit); position 0 of a
   * top-level git initializer is `resolvedCommit`.
   */
  resolvedCommits?: Readonly<Record<string, string>>;
}

/** Removes `user:password@` from a URL: who fetches does not change what is fetched, and refs are public names. */
function withoutCredentials(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^@/\s]+@/i, '$1');
}

/** Base ref of a Dockerfile source: `<baseRepository>:<sha256 of the source manifest>`. */
export function dockerfileBaseRef(file: BuildSourceDockerfile, baseRepository: string, opts: DockerfileRefOptions = {}): string {
  const init = file.source;
  if (!init?.spec) throw new InvalidRequest('build source is missing: the Dockerfile source has no initializer');
  const entries: Record<string, string> = {
    ContextPath: file.contextPath,
    DockerfilePath: file.dockerfilePath,
    DockerfileVersion: file.dockerfileVersion,
  };
  if (init.spec.$case === 'git') {
    const git = init.spec.git;
    entries.CloneTarget = opts.resolvedCommit ?? opts.resolvedCommits?.['0'] ?? git.cloneTaget;
    entries.RemoteURI = withoutCredentials(git.remoteUri);
    entries.Source = 'git';
  } else {
    // Gitpod refuses non-git initializers here; imgbuilder hashes what identifies their content instead.
    entries.Source = init.spec.$case;
    entries.Content = sha256(canonicalContent(init, opts.resolvedCommits ?? {}));
  }
  return `${baseRepository}:${sha256(manifest(entries))}`;
}

/** Workspace ref: `<workspaceRepository>:` + sha256(`<baseRef>\n<build process version>\n`). */
export function workspaceRef(baseRef: string, workspaceRepository: string): string {
  return `${workspaceRepository}:${sha256(`${baseRef}\n${BUILD_PROCESS_VERSION}\n`)}`;
}

/**
 * Visits every git initializer of a source depth-first, in the order the worker runs them (composite children in
 * order, a prebuild's git targets in order). The position is how resolved commits and sealed git secrets are keyed.
 */
export function forEachGit(init: WorkspaceInitializer | undefined, fn: (git: GitInitializer, index: number) => void): void {
  let n = 0;
  forEachInitializer(init, (i) => {
    const spec = i.spec;
    if (spec?.$case === 'git') fn(spec.git, n++);
    else if (spec?.$case === 'prebuild') for (const g of spec.prebuild.git) fn(g, n++);
  });
}

/**
 * A stable text of the fields that decide what an initializer puts into the context, with mutable git targets
 * replaced by the commits they resolved to. Credentials are left out: who fetches does not change what is fetched.
 */
export function canonicalContent(init: WorkspaceInitializer, resolvedCommits: Readonly<Record<string, string>> = {}): string {
  let gitIndex = 0;
  const git = (g: GitInitializer) => {
    const resolved = resolvedCommits[String(gitIndex++)] ?? '';
    return ['git', withoutCredentials(g.remoteUri), g.targetMode, g.cloneTaget, resolved, g.checkoutLocation, g.fullClone, Object.entries(g.config?.customConfig ?? {}).sort()];
  };
  const text = (i: WorkspaceInitializer): unknown => {
    const spec = i.spec;
    if (!spec) return 'none';
    switch (spec.$case) {
      case 'empty':
        return 'empty';
      case 'git':
        return git(spec.git);
      case 'download':
        return ['download', spec.download.targetLocation, spec.download.files.map((f) => [f.url, f.filePath, f.digest])];
      case 'snapshot':
        return ['snapshot', spec.snapshot.snapshot];
      case 'prebuild':
        return ['prebuild', spec.prebuild.prebuild?.snapshot ?? '', spec.prebuild.git.map(git)];
      case 'composite':
        return ['composite', spec.composite.initializer.map(text)];
      case 'backup':
        return ['backup', spec.backup.checkoutLocation];
    }
  };
  return JSON.stringify(text(init));
}
