import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm, readdir } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable, Transform } from 'node:stream';
import { createGunzip } from 'node:zlib';
import * as tar from 'tar-fs';
import { CloneTargetMode, GitAuthMethod, type GitInitializer, type WorkspaceInitializer } from '@imgbuilder/proto';
import { runGit, splitUrlCredentials, type GitCredentials } from '@imgbuilder/common/git';
import { checkResolvedHost, checkSourceUrl } from '@imgbuilder/common/source-policy';
import type { ObjectStore } from '@imgbuilder/common/object-store';

/** A build-source failure the user can act on; it becomes the build's done_failure message. */
export class SourceError extends Error {
  override name = 'SourceError';
}

export interface InitializerContext {
  /** Root of the build context on disk. */
  root: string;
  /** Git credentials by position of the git initializer (depth-first), unsealed from the job. */
  gitSecrets: { password: string; ots: string }[];
  allowLocal: boolean;
  objects: ObjectStore;
  signal: AbortSignal;
  log: (line: string) => void;
  /** Register more strings to redact from the log (OTS answers). */
  addSecrets: (s: string[]) => void;
  /** Commits the API resolved mutable targets to: the clone must check out exactly those. */
  resolvedCommits: Record<string, string>;
}

/** Materialises a WorkspaceInitializer into ctx.root (contentservice semantics). */
export async function runInitializer(init: WorkspaceInitializer, ctx: InitializerContext, counter = { git: 0 }): Promise<void> {
  const spec = init.spec;
  if (!spec) throw new SourceError('build source is missing: an initializer is empty');
  switch (spec.$case) {
    case 'empty':
      return;
    case 'git':
      return gitClone(spec.git, ctx, counter.git++);
    case 'download':
      return download(spec.download.files, spec.download.targetLocation, ctx);
    case 'composite':
      for (const c of spec.composite.initializer) await runInitializer(c, ctx, counter);
      return;
    case 'snapshot':
      return restoreSnapshot(spec.snapshot.snapshot, ctx);
    case 'prebuild': {
      const gits = spec.prebuild.git;
      const first = counter.git;
      counter.git += gits.length;
      try {
        if (!spec.prebuild.prebuild?.snapshot) throw new SourceError('prebuild names no snapshot');
        await restoreSnapshot(spec.prebuild.prebuild.snapshot, ctx);
        for (const [i, g] of gits.entries()) await checkoutInSnapshot(g, ctx, first + i);
      } catch (err) {
        ctx.log(`prebuild snapshot could not be used (${(err as Error).message}); falling back to git`);
        await emptyDir(ctx.root);
        for (const [i, g] of gits.entries()) await gitClone(g, ctx, first + i);
      }
      return;
    }
    case 'backup':
      throw new SourceError('the backup initializer is not supported: imgbuilder has no workspace backups');
  }
}

/** Resolves a request path inside `base`; refuses escapes. */
export function inside(base: string, rel: string, what: string): string {
  const p = resolve(base, rel || '.');
  if (p !== base && !p.startsWith(base + sep)) throw new SourceError(`${what} "${rel}" points outside the build context`);
  return p;
}

async function credentialsFor(git: GitInitializer, ctx: InitializerContext, index: number): Promise<GitCredentials | undefined> {
  const sealed = ctx.gitSecrets[index] ?? { password: '', ots: '' };
  const auth = git.config?.authentication ?? GitAuthMethod.NO_AUTH;
  if (auth === GitAuthMethod.BASIC_AUTH) return { username: git.config?.authUser ?? '', password: sealed.password };
  if (auth === GitAuthMethod.BASIC_AUTH_OTS) {
    if (!sealed.ots) throw new SourceError('git authentication BASIC_AUTH_OTS needs auth_ots');
    checkSourceUrl(sealed.ots, 'git auth_ots', false);
    await checkResolvedHost(sealed.ots, 'git auth_ots');
    const res = await fetch(sealed.ots, { signal: AbortSignal.any([ctx.signal, AbortSignal.timeout(30_000)]) }).catch((err: Error) => {
      throw new SourceError(`cannot fetch the one-time git secret: ${err.message}`);
    });
    if (!res.ok) throw new SourceError(`cannot fetch the one-time git secret: HTTP ${res.status}`);
    const body = (await res.text()).trim();
    const i = body.indexOf(':');
    if (i < 0) throw new SourceError('the one-time git secret is not of the form user:password');
    const creds = { username: body.slice(0, i), password: body.slice(i + 1) };
    ctx.addSecrets([creds.password, body]);
    return creds;
  }
  return splitUrlCredentials(git.remoteUri).credentials;
}

async function gitClone(git: GitInitializer, ctx: InitializerContext, index: number): Promise<void> {
  checkSourceUrl(git.remoteUri, 'git remote_uri', ctx.allowLocal);
  await checkResolvedHost(git.remoteUri, 'git remote_uri').catch((e: Error) => {
    throw new SourceError(e.message);
  });
  const creds = await credentialsFor(git, ctx, index);
  if (creds?.password) ctx.addSecrets([creds.password]);
  const url = splitUrlCredentials(git.remoteUri).url;
  const dir = inside(ctx.root, git.checkoutLocation, 'checkout_location');
  await mkdir(dir, { recursive: true });
  const opts = { cwd: dir, credentials: creds, config: git.config?.customConfig ?? {}, signal: ctx.signal, timeoutMs: 15 * 60_000 };
  const depth = git.fullClone ? [] : ['--depth', '1'];
  const pinned = ctx.resolvedCommits[String(index)];
  const target = git.cloneTaget;
  const mode = git.targetMode;
  ctx.log(`cloning ${url}${target ? ` (${CloneTargetMode[mode]} ${target})` : ''}${git.fullClone ? ', full clone' : ''}`);
  try {
    await runGit(['init', '-q', '.'], opts);
    await runGit(['remote', 'add', 'origin', url], opts);
    const want = mode === CloneTargetMode.REMOTE_COMMIT ? target : (pinned ?? (mode === CloneTargetMode.REMOTE_HEAD ? 'HEAD' : target));
    try {
      await runGit(['fetch', '-q', ...depth, 'origin', want], opts);
    } catch (err) {
      // Servers without uploadpack.allowAnySHA1InWant refuse a bare commit: fetch everything and pick it locally.
      if (mode !== CloneTargetMode.REMOTE_COMMIT && !pinned) throw err;
      await runGit(['fetch', '-q', 'origin', '+refs/heads/*:refs/remotes/origin/*', '+refs/tags/*:refs/tags/*'], opts);
    }
    const commitish = (mode === CloneTargetMode.REMOTE_COMMIT ? target : pinned) ?? 'FETCH_HEAD';
    if (mode === CloneTargetMode.LOCAL_BRANCH || mode === CloneTargetMode.REMOTE_BRANCH) {
      await runGit(['checkout', '-q', '-B', target, commitish], opts);
    } else {
      await runGit(['checkout', '-q', '--detach', commitish], opts);
    }
    if (git.upstreamRemoteUri) await runGit(['remote', 'add', 'upstream', splitUrlCredentials(git.upstreamRemoteUri).url], opts);
    const head = (await runGit(['rev-parse', 'HEAD'], opts)).trim();
    ctx.log(`checked out ${head}`);
  } catch (err) {
    throw new SourceError(`git clone of ${url} failed: ${(err as Error).message}`);
  }
}

async function checkoutInSnapshot(git: GitInitializer, ctx: InitializerContext, index: number): Promise<void> {
  const dir = inside(ctx.root, git.checkoutLocation, 'checkout_location');
  const creds = await credentialsFor(git, ctx, index);
  const opts = { cwd: dir, credentials: creds, config: git.config?.customConfig ?? {}, signal: ctx.signal, timeoutMs: 15 * 60_000 };
  const target = ctx.resolvedCommits[String(index)] ?? git.cloneTaget;
  await runGit(['fetch', '-q', 'origin', target || 'HEAD'], opts);
  await runGit(['checkout', '-q', '--detach', 'FETCH_HEAD'], opts);
}

async function download(files: { url: string; filePath: string; digest: string }[], target: string, ctx: InitializerContext): Promise<void> {
  const base = inside(ctx.root, target, 'download target_location');
  for (const f of files) {
    checkSourceUrl(f.url, 'download url', ctx.allowLocal);
    await checkResolvedHost(f.url, 'download url').catch((e: Error) => {
      throw new SourceError(e.message);
    });
    const dest = inside(base, f.filePath, 'download file_path');
    await mkdir(dirname(dest), { recursive: true });
    ctx.log(`downloading ${f.filePath}`);
    const res = await fetch(f.url, { signal: AbortSignal.any([ctx.signal, AbortSignal.timeout(10 * 60_000)]) }).catch((err: Error) => {
      throw new SourceError(`download of ${f.filePath} failed: ${err.message}`);
    });
    if (!res.ok || !res.body) throw new SourceError(`download of ${f.filePath} failed: HTTP ${res.status}`);
    const hash = createHash('sha256');
    await pipeline(
      Readable.fromWeb(res.body as import('node:stream/web').ReadableStream),
      new Transform({
        transform(chunk: Buffer, _enc, cb) {
          hash.update(chunk);
          cb(null, chunk);
        },
      }),
      createWriteStream(dest),
    );
    const got = `sha256:${hash.digest('hex')}`;
    if (got !== f.digest) throw new SourceError(`download of ${f.filePath}: digest mismatch (expected ${f.digest}, got ${got})`);
  }
}

/** `s3://bucket/key` or a key in the default bucket; a tar, optionally gzip-compressed. */
async function restoreSnapshot(name: string, ctx: InitializerContext): Promise<void> {
  let bucket = ctx.objects.bucket;
  let key = name;
  const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(name);
  if (m) [bucket, key] = [m[1], m[2]];
  ctx.log(`restoring snapshot ${key}`);
  let body: Readable;
  try {
    body = await ctx.objects.getStream(key, bucket);
  } catch (err) {
    throw new SourceError(`snapshot ${name} cannot be read: ${(err as Error).name === 'NoSuchKey' ? 'not found' : (err as Error).message}`);
  }
  const iter = body[Symbol.asyncIterator]();
  const first = await iter.next();
  const head: Buffer = first.done ? Buffer.alloc(0) : (first.value as Buffer);
  const rest = Readable.from((async function* () {
    yield head;
    for (;;) {
      const n = await iter.next();
      if (n.done) return;
      yield n.value as Buffer;
    }
  })());
  const gz = head[0] === 0x1f && head[1] === 0x8b;
  const root = ctx.root;
  try {
    const extract = tar.extract(root, {
        // Entries must stay inside the context, links included.
        ignore: (_name, header) => {
          const h = header as { type?: string; name: string; linkname?: string } | undefined;
          return (h?.type === 'symlink' || h?.type === 'link') && !!h.linkname && !resolve(dirname(join(root, h.name)), h.linkname).startsWith(root);
        },
        dmode: 0o755,
        fmode: 0o644,
      });
    if (gz) await pipeline(rest, createGunzip(), extract);
    else await pipeline(rest, extract);
  } catch (err) {
    throw new SourceError(`snapshot ${name} is not a valid tar archive: ${(err as Error).message}`);
  }
}

async function emptyDir(dir: string): Promise<void> {
  for (const e of await readdir(dir)) await rm(join(dir, e), { recursive: true, force: true });
}
