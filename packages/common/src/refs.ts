import { createHash } from 'node:crypto';
import type { BuildSourceDockerfile, WorkspaceInitializer } from '@imgbuilder/proto';
import { invalidArgument } from './errors.js';

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
}

/** Base ref of a Dockerfile source: `<baseRepository>:<sha256 of the source manifest>`. */
export function dockerfileBaseRef(file: BuildSourceDockerfile, baseRepository: string, opts: DockerfileRefOptions = {}): string {
  const init = file.source;
  if (!init?.spec) throw invalidArgument('build source is missing: the Dockerfile source has no initializer');
  const entries: Record<string, string> = {
    ContextPath: file.contextPath,
    DockerfilePath: file.dockerfilePath,
    DockerfileVersion: file.dockerfileVersion,
  };
  if (init.spec.$case === 'git') {
    const git = init.spec.git;
    entries.CloneTarget = opts.resolvedCommit ?? git.cloneTaget;
    entries.RemoteURI = git.remoteUri;
    entries.Source = 'git';
  } else {
    // Gitpod refuses non-git initializers here; imgbuilder hashes what identifies their content instead.
    entries.Source = init.spec.$case;
    entries.Content = sha256(canonicalContent(init));
  }
  return `${baseRepository}:${sha256(manifest(entries))}`;
}

/** Workspace ref: `<workspaceRepository>:` + sha256(`<baseRef>\n<build process version>\n`). */
export function workspaceRef(baseRef: string, workspaceRepository: string): string {
  return `${workspaceRepository}:${sha256(`${baseRef}\n${BUILD_PROCESS_VERSION}\n`)}`;
}

/**
 * A stable text of the fields that decide what an initializer puts into the context. Credentials are left out:
 * who fetches does not change what is fetched.
 */
export function canonicalContent(init: WorkspaceInitializer): string {
  const spec = init.spec;
  if (!spec) return 'none';
  switch (spec.$case) {
    case 'empty':
      return 'empty';
    case 'git': {
      const g = spec.git;
      return JSON.stringify(['git', g.remoteUri, g.targetMode, g.cloneTaget, g.checkoutLocation, g.fullClone, Object.entries(g.config?.customConfig ?? {}).sort()]);
    }
    case 'download':
      return JSON.stringify(['download', spec.download.targetLocation, spec.download.files.map((f) => [f.url, f.filePath, f.digest])]);
    case 'snapshot':
      return JSON.stringify(['snapshot', spec.snapshot.snapshot]);
    case 'prebuild':
      return JSON.stringify(['prebuild', spec.prebuild.prebuild?.snapshot ?? '', spec.prebuild.git.map((g) => canonicalContent({ spec: { $case: 'git', git: g } }))]);
    case 'composite':
      return JSON.stringify(['composite', spec.composite.initializer.map(canonicalContent)]);
    case 'backup':
      return JSON.stringify(['backup', spec.backup.checkoutLocation]);
  }
}
