import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { CacheRefs } from '@imgbuilder/common/cache-refs';
import { ImageNotFound } from '@imgbuilder/common/errors';
import { parseImageRef, repositoryOf } from '@imgbuilder/common/image-ref';
import { pushCredentials, type CredentialTable, type RegistryAuthPolicy, type RegistryCredentials } from '@imgbuilder/common/registry-auth';
import type { RegistryClient } from '@imgbuilder/common/registry-client';
import type { ObjectStore } from '@imgbuilder/common/object-store';
import type { DockerEngine } from '../docker-engine.js';
import { cacheRefOf, identityOf, isUploadKey, leavesOf, type CacheSource } from './cache-identity.js';
import { stagesOf, type Stage } from './dockerfile-stages.js';

/** Cache refs one build imports at most: each costs BuildKit a manifest and config fetch, matched or not. */
export const MAX_IMPORTS = 3;
/** Intermediate stages kept as cache refs of their own (the first named ones the final stage needs). */
export const MAX_STAGE_REFS = 2;
/** How long a lookup's answer is reused: a ref found, a ref missing (a push on this worker replaces it at once). */
const FOUND_TTL_MS = 5 * 60_000;
const MISSING_TTL_MS = 30_000;

export interface BuildCacheOptions {
  registry: RegistryClient;
  /** Holds uploaded snapshots, whose directory name becomes part of the cache identity. */
  objects: ObjectStore;
  engine: DockerEngine;
  /** The installation's registry credentials (IMGBUILDER_REGISTRY_AUTH_FILE): cache images are pushed with them. */
  installation: CredentialTable;
  /** The cache repository (cacheRepositoryOf). */
  repository: string;
  /** Where each ref's last use is recorded (retention). */
  refs: CacheRefs;
}

/** The refs one stage's image is kept as, with what each means (for the log). */
export interface StageRefs {
  /** The stage's name as a build target; undefined for the final stage. */
  target?: string;
  refs: { ref: string; why: string }[];
}

/** What one build imports and, once it succeeded, keeps. */
export interface CachePlan {
  /** At most MAX_IMPORTS refs, each a different image. */
  cacheFrom: string[];
  /** The final stage's refs first, then each kept intermediate stage's. */
  keep: StageRefs[];
  /** Whom the lookups were made for (the lookup cache learns of this build's pushes under it). */
  readerKey: string;
}

/**
 * The layer cache shared by every worker through the registry. A BuildKit build writes inline cache metadata into its
 * image, but only for the final stage's steps; so after a successful build each of up to MAX_STAGE_REFS named
 * intermediate stages is built again as its own target (every step cached on this engine) and kept too (buildKept). Each image
 * is kept under two refs: one of its source identity (the same repository a week later) and one of its content (the
 * base image's digest and the normalised instructions of the stage and the stages it uses: a fork, or another
 * repository with the same Dockerfile). A build imports at most MAX_IMPORTS of the refs that exist, found by HEAD
 * requests whose answers are cached; BuildKit then decides step by step by its own cache keys, so a ref that does not
 * match costs one lookup and nothing else.
 */
export class BuildCache {
  private readonly registry: RegistryClient;
  private readonly objects: ObjectStore;
  private readonly engine: DockerEngine;
  private readonly installation: CredentialTable;
  private readonly repository: string;
  private readonly refs: CacheRefs;
  /** A ref's digest (or null: missing) by ref and reader; base image digests by image and reader. */
  private readonly lookups = new LRUCache<string, string | { missing: true }>({ max: 10_000, ttl: FOUND_TTL_MS });

  constructor(opts: BuildCacheOptions) {
    ({ registry: this.registry, objects: this.objects, engine: this.engine, installation: this.installation, repository: this.repository, refs: this.refs } = opts);
  }

  /**
   * Decides which refs the build imports and keeps, and writes one line per import (or one saying there is none).
   * Where the build's credentials are needed to read the cache repository, imported refs are pulled into the engine
   * first: dockerd's BuildKit takes registry credentials from a client session only, and imports inline cache from a
   * local image before it asks a registry.
   */
  async plan(s: CacheSource & { dockerfileText: string }, how: { caller: string; fresh: boolean }, policy: RegistryAuthPolicy, line: (t: string) => void, signal: AbortSignal, cleanup: string[]): Promise<CachePlan> {
    const repo = parseImageRef(`${this.repository}:x`);
    const credentials = policy.credentialsFor(repo.domain);
    const readerKey = readerOf(credentials);
    const identity = await this.identityOf(s, how.caller);
    const keep = await this.refsToKeep(s.dockerfileText, identity, policy);
    const plan: CachePlan = { cacheFrom: [], keep, readerKey };
    if (how.fresh) {
      line('build cache: none imported (force_rebuild): every step runs again; the result is kept as cache');
      return plan;
    }
    const seen = new Set<string>();
    try {
      for (const { ref, why } of keep.flatMap((k) => k.refs)) {
        if (plan.cacheFrom.length >= MAX_IMPORTS) break;
        const digest = await this.lookup(ref, credentials, readerKey);
        if (!digest || seen.has(digest)) continue;
        seen.add(digest);
        if (credentials) {
          await this.engine.pull(ref, credentials, signal, () => undefined);
          cleanup.push(ref);
        }
        line(`build cache: importing ${ref} (${why})`);
        plan.cacheFrom.push(ref);
      }
    } catch (err) {
      if (signal.aborted) throw err;
      line(`build cache: ${this.repository} cannot be read (${(err as Error).message}); building without ${plan.cacheFrom.length ? 'more of it' : 'it'}`);
      return plan;
    }
    if (!plan.cacheFrom.length) {
      const own = identity ? ` for this source (${cacheRefOf(identity, this.repository)}) or` : ' for';
      line(`build cache: none yet${own} this Dockerfile's content; building without it`);
    }
    await this.refs.touch(plan.cacheFrom).catch(() => undefined);
    return plan;
  }

  /**
   * Builds the images a successful build keeps as cache refs, again on this engine from its records alone (`build`
   * must not pass cache-from): on Docker 20.10 an image carries no cache metadata for the steps it took from an
   * imported ref (measured: a third engine importing such a ref ran the step again), while one built again from the
   * engine's own records carries them all. Each named stage kept is built as its target; the final stage only when
   * the build imported something. Returns the images by target ('' for the final stage).
   */
  async buildKept(plan: CachePlan, buildId: string, build: (target: string | undefined, tag: string) => Promise<string>, line: (t: string) => void, signal: AbortSignal, cleanup: string[]): Promise<Map<string, string>> {
    const kept = new Map<string, string>();
    for (const k of plan.keep) {
      if (k.target === undefined && !plan.cacheFrom.length) continue;
      const tag = `imgbuilder-stage/${buildId}:${(k.target ?? 'final').replace(/[^\w.-]/g, '_').slice(0, 100)}`;
      try {
        kept.set(k.target ?? '', await build(k.target, tag));
      } catch (err) {
        if (signal.aborted) throw err;
        line(`build cache: ${k.target ? `stage ${k.target}` : 'the final stage'} not kept (${(err as Error).message})`);
      } finally {
        cleanup.push(tag);
      }
    }
    return kept;
  }

  /**
   * Keeps a successful build's images as cache refs, pushed with the installation's credentials (never a caller's):
   * `kept` as buildKept returned it; without an image of its own the final stage is `finalImage`. A failure costs the
   * next build time only.
   */
  async record(plan: CachePlan, finalImage: string, kept: ReadonlyMap<string, string>, signal: AbortSignal, line: (t: string) => void, cleanup: string[]): Promise<void> {
    const creds = pushCredentials(this.installation, this.repository);
    const pushed: string[] = [];
    // Kept images at once; one image's refs one after another: two pushes of the same layers to one repository at the
    // same time can fail in the registry (a blob upload the other push completed), the second push is a manifest only.
    await Promise.all(
      plan.keep.map(async (k) => {
        const image = k.target === undefined ? (kept.get('') ?? finalImage) : kept.get(k.target);
        if (!image || !k.refs.length) return;
        try {
          for (const { ref } of k.refs) {
            const parsed = parseImageRef(ref);
            await this.engine.tag(image, repositoryOf(parsed), parsed.tag!);
            cleanup.push(ref);
          }
          for (const { ref } of k.refs) {
            const parsed = parseImageRef(ref);
            const digest = await this.engine.push(repositoryOf(parsed), parsed.tag!, creds, signal, () => undefined);
            if (digest) this.lookups.set(`${ref} ${plan.readerKey}`, digest);
            pushed.push(ref);
          }
          line(`build cache: pushed ${k.target === undefined ? '' : `stage ${k.target} as `}${k.refs.map((r) => r.ref).join(', ')}`);
        } catch (err) {
          if (signal.aborted) throw err;
          line(`build cache: could not push ${k.refs.map((r) => r.ref).join(', ')} (${(err as Error).message}); the next build of this source may start cold`);
        }
      }),
    );
    await this.refs.touch(pushed).catch(() => undefined);
  }

  /** The source identity (cache-identity.ts), with the directory names of uploads read from their metadata. */
  private async identityOf(s: CacheSource, caller: string): Promise<string | undefined> {
    const leaves = leavesOf(s.source);
    const names = new Map<string, string>();
    for (const { spec } of leaves) {
      // Uploads land under snapshots/ of our bucket, named by their content; the directory name rides along.
      if (spec?.$case !== 'snapshot' || !isUploadKey(spec.snapshot.snapshot)) continue;
      const meta = await this.objects.metadata(spec.snapshot.snapshot).catch(() => undefined);
      const name = meta?.['upload-name'];
      if (name) names.set(spec.snapshot.snapshot, decodeURIComponent(name));
    }
    return identityOf(leaves, s, { names, caller });
  }

  /** The final stage's refs, then those of the first MAX_STAGE_REFS named stages it needs; identity refs first. */
  private async refsToKeep(dockerfile: string, identity: string | undefined, policy: RegistryAuthPolicy): Promise<StageRefs[]> {
    const parsed = stagesOf(dockerfile);
    if (!parsed) return identity ? [{ refs: [{ ref: cacheRefOf(identity, this.repository), why: 'this source' }] }] : [];
    const keys = await contentKeys(parsed.stages, (image) => this.baseDigest(image, policy));
    const final = parsed.stages.length - 1;
    const refsOf = (i: number, name?: string): StageRefs => {
      const own = name === undefined ? identity : identity && `${identity}\nstage ${name}`;
      const what = name === undefined ? '' : `stage ${name} of `;
      return {
        ...(name === undefined ? {} : { target: name }),
        refs: [
          ...(own ? [{ ref: cacheRefOf(own, this.repository), why: `${what}this source` }] : []),
          { ref: cacheRefOf(`content\n${keys.get(i)}`, this.repository), why: `${what || 'final stage of '}this Dockerfile's content` },
        ],
      };
    };
    const stages = parsed.needed
      .filter((i) => i !== final && parsed.stages[i].name !== undefined)
      .slice(0, MAX_STAGE_REFS)
      .map((i) => refsOf(i, parsed.stages[i].name));
    return [refsOf(final), ...stages];
  }

  /** A ref's digest, or undefined when it does not exist; registry errors propagate. */
  private async lookup(ref: string, credentials: RegistryCredentials | undefined, readerKey: string): Promise<string | undefined> {
    const key = `${ref} ${readerKey}`;
    const known = this.lookups.get(key);
    if (known !== undefined) return typeof known === 'string' ? known : undefined;
    try {
      const digest = await this.registry.resolveDigest(parseImageRef(ref), { credentials });
      this.lookups.set(key, digest);
      return digest;
    } catch (err) {
      if (!(err instanceof ImageNotFound)) throw err;
      this.lookups.set(key, { missing: true }, { ttl: MISSING_TTL_MS });
      return undefined;
    }
  }

  /** A FROM image's digest as the build's credentials see it; the name as written when it cannot be resolved. */
  private async baseDigest(image: string, policy: RegistryAuthPolicy): Promise<string> {
    let ref;
    try {
      ref = parseImageRef(image);
    } catch {
      return image;
    }
    const credentials = policy.credentialsFor(ref.domain);
    const key = `base ${image} ${readerOf(credentials)}`;
    const known = this.lookups.get(key);
    if (known !== undefined) return typeof known === 'string' ? `${image}@${known}` : image;
    const digest = await this.registry.resolveDigest(ref, { credentials }).catch(() => undefined);
    // An image that cannot be resolved is not asked for again at once (a registry that times out would slow each build).
    this.lookups.set(key, digest ?? { missing: true }, digest ? {} : { ttl: MISSING_TTL_MS });
    return digest ? `${image}@${digest}` : image;
  }
}

/**
 * Each stage's content key: what it starts from (a base image's digest, or the parent stage's key), the keys of the
 * stages it copies or mounts from, and its normalised instructions. Two Dockerfiles with the same stage get the same
 * key wherever they come from.
 */
async function contentKeys(stages: Stage[], digestOf: (image: string) => Promise<string>): Promise<Map<number, string>> {
  const keys = new Map<number, string>();
  for (const s of stages) {
    // A platform flag changes the layers as much as the image does.
    const from = 'stage' in s.from ? `stage ${keys.get(s.from.stage)}` : `image ${s.from.image === 'scratch' ? 'scratch' : await digestOf(s.from.image)} ${s.from.flags.join(' ')}`;
    const text = ['imgbuilder stage cache v1', from, ...s.uses.map((u) => `uses ${keys.get(u)}`), ...s.instructions].join('\n');
    keys.set(s.index, createHash('sha256').update(text).digest('hex'));
  }
  return keys;
}

/** A lookup's reader: the credentials' hash, so an answer one caller's credentials got is never another's. */
function readerOf(c: RegistryCredentials | undefined): string {
  return c ? createHash('sha256').update(JSON.stringify([c.username ?? null, c.password ?? null, c.auth ?? null])).digest('hex') : 'anonymous';
}
