import { createHash } from 'node:crypto';
import type { WorkspaceInitializer } from '@imgbuilder/proto';
import { parseImageRef, repositoryOf } from '@imgbuilder/common/image-ref';
import { pushCredentials, type CredentialTable, type RegistryAuthPolicy } from '@imgbuilder/common/registry-auth';
import type { RegistryClient } from '@imgbuilder/common/registry-client';
import type { DockerEngine } from '../docker-engine.js';
import type { ObjectStore } from '@imgbuilder/common/object-store';
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
function leavesOf(i: WorkspaceInitializer | undefined, into: WorkspaceInitializer[] = []): WorkspaceInitializer[] {
  if (i?.spec?.$case === 'composite') for (const c of i.spec.composite.initializer) leavesOf(c, into);
  else if (i) into.push(i);
  return into;
}

function identityOf(leaves: WorkspaceInitializer[], s: CacheSource, uploads: { names: ReadonlyMap<string, string>; caller: string }): string | undefined {
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
function isUploadKey(key: string): boolean {
  return key.startsWith(OWN_SNAPSHOT_PREFIX) && /^[0-9a-f]{64}\.tar(\.gz)?$/.test(key.slice(OWN_SNAPSHOT_PREFIX.length));
}

/** The registry ref holding the cache of one source identity (a tag that never collides with a base ref's). */
export function cacheRefOf(identity: string, repository: string): string {
  return `${repository}:cache-${createHash('sha256').update(identity).digest('hex').slice(0, 40)}`;
}

export interface BuildCacheOptions {
  registry: RegistryClient;
  /** Holds uploaded snapshots, whose directory name becomes part of the cache identity. */
  objects: ObjectStore;
  engine: DockerEngine;
  /** The installation's registry credentials (IMGBUILDER_REGISTRY_AUTH_FILE): cache images are pushed with them. */
  installation: CredentialTable;
  /** Where cache images are pushed (IMGBUILDER_CACHE_REPOSITORY, else IMGBUILDER_BASE_REPOSITORY). */
  repository: string;
}

/**
 * The layer cache shared by every worker through the registry. A BuildKit build writes inline cache metadata into
 * its image; after a successful build that image is also tagged as its source identity's cache ref and pushed with
 * the installation's credentials. The next build of the identity, on any engine, imports it (`cacheFrom`) when the
 * build's own pull credentials can read it; otherwise it builds cold, saying so in one line.
 */
export class BuildCache {
  private readonly registry: RegistryClient;
  private readonly objects: ObjectStore;
  private readonly engine: DockerEngine;
  private readonly installation: CredentialTable;
  private readonly repository: string;

  constructor(opts: BuildCacheOptions) {
    ({ registry: this.registry, objects: this.objects, engine: this.engine, installation: this.installation, repository: this.repository } = opts);
  }

  async refFor(s: CacheSource, caller: string): Promise<string | undefined> {
    const leaves = leavesOf(s.source);
    const names = new Map<string, string>();
    for (const { spec } of leaves) {
      // Uploads land under snapshots/ of our bucket, named by their content; the directory name rides along.
      if (spec?.$case !== 'snapshot' || !isUploadKey(spec.snapshot.snapshot)) continue;
      const meta = await this.objects.metadata(spec.snapshot.snapshot).catch(() => undefined);
      const name = meta?.['upload-name'];
      if (name) names.set(spec.snapshot.snapshot, decodeURIComponent(name));
    }
    const identity = identityOf(leaves, s, { names, caller });
    return identity ? cacheRefOf(identity, this.repository) : undefined;
  }

  /**
   * Whether `ref` can be imported with the pull credentials this build has; writes one line when it cannot. Where
   * those credentials are needed, the image is pulled into the engine first: dockerd's BuildKit takes registry
   * credentials from a client session only, and imports inline cache from a local image before it asks a registry.
   */
  async importable(ref: string, policy: RegistryAuthPolicy, line: (t: string) => void, signal: AbortSignal, cleanup: string[]): Promise<boolean> {
    const parsed = parseImageRef(ref);
    const credentials = policy.credentialsFor(parsed.domain);
    try {
      if (!(await this.registry.exists(parsed, { credentials }))) {
        line(`build cache: none yet for this source (${ref}); building without it`);
        return false;
      }
      if (credentials) {
        await this.engine.pull(ref, credentials, signal, () => undefined);
        cleanup.push(ref);
      }
      line(`build cache: importing ${ref}`);
      return true;
    } catch (err) {
      if (signal.aborted) throw err;
      line(`build cache: ${ref} cannot be read (${(err as Error).message}); building without it`);
      return false;
    }
  }

  /** Publishes a successful build's image as the cache of its identity; a failure costs the next build time only. */
  async record(image: string, ref: string, signal: AbortSignal, line: (t: string) => void, cleanup: string[]): Promise<void> {
    const parsed = parseImageRef(ref);
    const repo = repositoryOf(parsed);
    const tag = parsed.tag ?? 'latest';
    try {
      await this.engine.tag(image, repo, tag);
      cleanup.push(ref);
      await this.engine.push(repo, tag, pushCredentials(this.installation, this.repository), signal, () => undefined);
      line(`build cache: pushed ${ref}`);
    } catch (err) {
      if (signal.aborted) throw err;
      line(`build cache: could not push ${ref} (${(err as Error).message}); the next build of this source starts cold`);
    }
  }
}
