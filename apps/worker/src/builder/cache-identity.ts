import { createHash } from 'node:crypto';
import type { WorkspaceInitializer } from '@imgbuilder/proto';
import { OWN_SNAPSHOT_PREFIX } from '@imgbuilder/common/source-policy';

/** A Dockerfile build source: where its context comes from and which Dockerfile in it is built. */
export interface CacheSource {
  source: WorkspaceInitializer;
  dockerfilePath: string;
  contextPath: string;
}

/**
 * What makes two builds "the same source" for the layer cache, or undefined when a source has nothing stable to
 * name it by. The rule: the same git remotes (credentials, letter case of the host, a trailing `.git` and the branch
 * or commit ignored) checked out at the same places, or the same download URLs (query strings ignored), plus the same
 * Dockerfile path and context path. A CLI upload (a snapshot of ours) counts by the directory name it was uploaded
 * from and the caller (the request's triggered_by). Each build of an identity reuses what the previous one left in
 * the registry.
 */
export function sourceIdentity(s: CacheSource, uploads: { names: ReadonlyMap<string, string>; caller: string } = { names: new Map(), caller: '' }): string | undefined {
  return identityOf(leavesOf(s.source), s, uploads);
}

/** The initializers of a source that are not composites, depth-first. */
export function leavesOf(i: WorkspaceInitializer | undefined, into: WorkspaceInitializer[] = []): WorkspaceInitializer[] {
  if (i?.spec?.$case === 'composite') for (const c of i.spec.composite.initializer) leavesOf(c, into);
  else if (i) into.push(i);
  return into;
}

export function identityOf(leaves: WorkspaceInitializer[], s: CacheSource, uploads: { names: ReadonlyMap<string, string>; caller: string }): string | undefined {
  const parts: string[] = [];
  for (const { spec } of leaves) {
    if (spec?.$case === 'git') parts.push(`git ${normaliseRemote(spec.git.remoteUri)} ${spec.git.checkoutLocation}`);
    else if (spec?.$case === 'snapshot' && uploads.names.has(spec.snapshot.snapshot)) parts.push(`upload ${uploads.names.get(spec.snapshot.snapshot)} by ${uploads.caller}`);
    else if (spec?.$case === 'download') for (const f of spec.download.files) parts.push(`download ${withoutQuery(f.url)} ${f.filePath}`);
  }
  if (!parts.length) return undefined;
  return [...parts, `dockerfile ${s.dockerfilePath || 'Dockerfile'}`, `context ${s.contextPath || '.'}`].join('\n');
}

function normaliseRemote(uri: string): string {
  const scp = /^[^@/:]+@([^:/]+):(.+)$/.exec(uri);
  let hostPath: string;
  if (scp) hostPath = `${scp[1].toLowerCase()}/${scp[2]}`;
  else {
    try {
      const u = new URL(uri);
      hostPath = `${u.host.toLowerCase()}${u.pathname}`;
    } catch {
      hostPath = uri;
    }
  }
  return hostPath.replace(/\/+$/, '').replace(/\.git$/, '');
}

function withoutQuery(url: string): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return url.split('?')[0];
  }
}

/** Whether a snapshot key is an upload's: named by its content's digest under our own snapshot prefix. */
export function isUploadKey(key: string): boolean {
  return key.startsWith(OWN_SNAPSHOT_PREFIX) && /^[0-9a-f]{64}\.tar(\.gz)?$/.test(key.slice(OWN_SNAPSHOT_PREFIX.length));
}

/** The registry ref holding the cache of one source identity (a tag that never collides with a base ref's). */
export function cacheRefOf(identity: string, repository: string): string {
  return `${repository}:cache-${createHash('sha256').update(identity).digest('hex').slice(0, 40)}`;
}
