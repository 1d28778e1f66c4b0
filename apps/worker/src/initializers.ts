import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, rm, writeFile } from 'node:fs/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import { dirname, join, resolve, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable, Transform } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { createGunzip } from 'node:zlib';
import * as tar from 'tar-fs';
import { CloneTargetMode, GitAuthMethod, type GitInitializer, type WorkspaceInitializer } from '@imgbuilder/proto';
import { ImgbuilderError } from '@imgbuilder/common/errors';
import { runGit, splitUrlCredentials, type GitCredentials, type RunGitOptions } from '@imgbuilder/common/git';
import { checkGitConfig, checkHttpUrl, checkResolvedHost, checkSnapshotSource, checkSourceUrl, guardedLookup, hasGitPart, parseSourceUrl, SECRET_GIT_CONFIG } from '@imgbuilder/common/source-policy';
import { ContextWriteError, mkdirInside, openInside } from './context-fs.js';
import type { ObjectStore } from '@imgbuilder/common/object-store';
import type { ContextLimits } from './build-context.js';

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

/** Git secrets of one git initializer, unsealed from the job. */
export interface GitSecrets {
  password: string;
  ots: string;
  /** custom_config travels sealed: http.extraHeader values are tokens. */
  config?: Record<string, string>;
}

export interface InitializerContext {
  /** Root of the build context on disk. */
  root: string;
  /** Git secrets by position of the git initializer (depth-first, see forEachGit in refs.ts). */
  gitSecrets: GitSecrets[];
  allowLocal: boolean;
  objects: ObjectStore;
  signal: AbortSignal;
  log: (line: string) => void;
  /** Register more strings to redact from the log (OTS answers). */
  addSecrets: (s: string[]) => void;
  /** Commits the API resolved mutable targets to: the clone must check out exactly those. */
  resolvedCommits: Record<string, string>;
  /** Caps on what downloads and snapshots may write (git checkouts are measured afterwards, with the context). */
  limits?: ContextLimits;
  /** Download URLs by position (depth-first, see forEachDownload), unsealed from the job: they often carry tokens. */
  downloadUrls?: string[];
  /** IMGBUILDER_SNAPSHOT_SOURCES: buckets (or bucket/prefix) snapshots may come from besides our own snapshots/. */
  snapshotSources?: readonly string[];
}

/** What one run over an initializer tree shares: git positions, fetched credentials, the write budget. */
interface RunState {
  git: number;
  /** One-time secrets are fetched once per git initializer, even when a prebuild falls back to a clone. */
  credentials: Map<number, Promise<GitCredentials | undefined>>;
  bytes: number;
  files: number;
  /** Position of the next download file (keys ctx.downloadUrls). */
  download: number;
}

const GIT_TIMEOUT_MS = 15 * 60_000;

/** Materialises a WorkspaceInitializer into ctx.root (contentservice semantics). */
export async function runInitializer(init: WorkspaceInitializer, ctx: InitializerContext): Promise<void> {
  await run(init, ctx, { git: 0, credentials: new Map(), bytes: 0, files: 0, download: 0 });
}

async function run(init: WorkspaceInitializer, ctx: InitializerContext, state: RunState): Promise<void> {
  const spec = init.spec;
  if (!spec) throw new SourceError('build source is missing: an initializer is empty');
  switch (spec.$case) {
    case 'empty':
      return;
    case 'git':
      return gitClone(spec.git, ctx, state, state.git++);
    case 'download':
      return download(spec.download.files, spec.download.targetLocation, ctx, state);
    case 'composite':
      for (const c of spec.composite.initializer) await run(c, ctx, state);
      return;
    case 'snapshot':
      return restoreSnapshot(spec.snapshot.snapshot, spec.snapshot.fromVolumeSnapshot, ctx, state, false);
    case 'prebuild': {
      const gits = spec.prebuild.git;
      const first = state.git;
      state.git += gits.length;
      const snap = spec.prebuild.prebuild;
      let restored = false;
      try {
        if (!snap?.snapshot) throw new SourceError('prebuild names no snapshot');
        await restoreSnapshot(snap.snapshot, snap.fromVolumeSnapshot, ctx, state, true);
        for (const g of gits) await usableWorkingCopy(g, ctx);
        restored = true;
      } catch (err) {
        if (ctx.signal.aborted) throw err;
        ctx.log(`prebuild snapshot could not be used (${(err as Error).message}); falling back to git`);
        await emptyDir(ctx.root);
        state.bytes = 0;
        state.files = 0;
        for (const [i, g] of gits.entries()) await gitClone(g, ctx, state, first + i);
      }
      // As in Gitpod: once the snapshot is in place, a failing checkout fails the build rather than the snapshot.
      if (restored) for (const [i, g] of gits.entries()) await checkoutInSnapshot(g, ctx, state, first + i);
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

/** Policy errors raised in the worker end the build; their message is already user-facing. */
function asSource<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof ImgbuilderError) throw new SourceError(err.message);
    throw err;
  }
}

async function checkRemote(url: string, what: string, allowLocal: boolean): Promise<void> {
  asSource(() => checkSourceUrl(url, what, allowLocal));
  await checkResolvedHost(url, what).catch((e: Error) => {
    throw new SourceError(e.message);
  });
}

function credentialsFor(git: GitInitializer, ctx: InitializerContext, state: RunState, index: number): Promise<GitCredentials | undefined> {
  let p = state.credentials.get(index);
  if (!p) {
    p = fetchCredentials(git, ctx, index);
    state.credentials.set(index, p);
  }
  return p;
}

async function fetchCredentials(git: GitInitializer, ctx: InitializerContext, index: number): Promise<GitCredentials | undefined> {
  const sealed = ctx.gitSecrets[index] ?? { password: '', ots: '' };
  const auth = git.config?.authentication ?? GitAuthMethod.NO_AUTH;
  if (auth === GitAuthMethod.BASIC_AUTH) return { username: git.config?.authUser ?? '', password: sealed.password };
  if (auth === GitAuthMethod.BASIC_AUTH_OTS) {
    if (!sealed.ots) throw new SourceError('git authentication BASIC_AUTH_OTS needs auth_ots');
    // The OTS URL is a bearer secret itself: errors name neither it nor its answer.
    const res = await httpGet(sealed.ots, 'git auth_ots', ctx.signal, 30_000).catch((err: Error) => {
      throw new SourceError(`cannot fetch the one-time git secret: ${err.message}`);
    });
    const body = await readBody(res, 64 * 1024).catch((err: Error) => {
      throw new SourceError(`cannot fetch the one-time git secret: ${err.message}`);
    });
    if (res.statusCode !== 200) throw new SourceError(`cannot fetch the one-time git secret: HTTP ${res.statusCode}`);
    const text = body.toString('utf8').trim();
    const i = text.indexOf(':');
    if (i < 0) throw new SourceError('the one-time git secret is not of the form user:password');
    const creds = { username: text.slice(0, i), password: text.slice(i + 1) };
    ctx.addSecrets([creds.password, text]);
    return creds;
  }
  return splitUrlCredentials(git.remoteUri).credentials;
}

/** Everything a git run of this initializer needs: credentials, sealed custom_config, transport policy. */
async function gitOptions(git: GitInitializer, ctx: InitializerContext, state: RunState, index: number, cwd: string): Promise<RunGitOptions> {
  const config = ctx.gitSecrets[index]?.config ?? git.config?.customConfig ?? {};
  asSource(() => checkGitConfig(config));
  ctx.addSecrets(Object.entries(config).filter(([k]) => SECRET_GIT_CONFIG.test(k)).map(([, v]) => v));
  const credentials = await credentialsFor(git, ctx, state, index);
  if (credentials?.password) ctx.addSecrets([credentials.password]);
  return { cwd, credentials, config, allowFile: ctx.allowLocal, signal: ctx.signal, timeoutMs: GIT_TIMEOUT_MS };
}

/** What to fetch: the commit (REMOTE_COMMIT, or the one the API pinned), else the branch; LOCAL_BRANCH starts at HEAD. */
function wantOf(git: GitInitializer, pinned: string | undefined): string {
  if (git.targetMode === CloneTargetMode.REMOTE_COMMIT) return git.cloneTaget;
  if (pinned) return pinned;
  return git.targetMode === CloneTargetMode.REMOTE_BRANCH ? git.cloneTaget : 'HEAD';
}

/** Checks out the fetched target the way Gitpod's content service does for each mode. */
async function checkoutTarget(git: GitInitializer, opts: RunGitOptions, commitish: string): Promise<void> {
  const target = git.cloneTaget;
  switch (git.targetMode) {
    case CloneTargetMode.REMOTE_BRANCH:
      await runGit(['update-ref', `refs/remotes/origin/${target}`, commitish], opts);
      await runGit(['checkout', '-q', '-B', target, `refs/remotes/origin/${target}`], opts);
      await runGit(['branch', '-q', `--set-upstream-to=origin/${target}`, target], opts);
      return;
    case CloneTargetMode.LOCAL_BRANCH:
      // A new local branch off the remote head; it need not exist on the remote.
      await runGit(['checkout', '-q', '-B', target, commitish], opts);
      return;
    default:
      await runGit(['checkout', '-q', '--detach', commitish], opts);
  }
}

async function gitClone(git: GitInitializer, ctx: InitializerContext, state: RunState, index: number): Promise<void> {
  await checkRemote(git.remoteUri, 'git remote_uri', ctx.allowLocal);
  if (git.cloneTaget.startsWith('-')) throw new SourceError('git clone_taget must not start with "-"');
  const url = splitUrlCredentials(git.remoteUri).url;
  const dir = inside(ctx.root, git.checkoutLocation, 'checkout_location');
  await newCheckoutDir(ctx.root, dir, git.checkoutLocation);
  const opts = await gitOptions(git, ctx, state, index, dir);
  const pinned = ctx.resolvedCommits[String(index)];
  const mode = git.targetMode;
  const want = wantOf(git, pinned);
  const isCommit = mode === CloneTargetMode.REMOTE_COMMIT || !!pinned;
  ctx.log(`cloning ${url}${git.cloneTaget ? ` (${CloneTargetMode[mode]} ${git.cloneTaget})` : ''}${pinned ? ` at ${pinned}` : ''}${git.fullClone ? ', full clone' : ''}`);
  try {
    await runGit(['init', '-q', '.'], opts);
    // Only the bare URL is stored in .git/config; credentials reach git through GIT_ASKPASS alone.
    await runGit(['remote', 'add', 'origin', url], opts);
    const everything = ['+refs/heads/*:refs/remotes/origin/*', '+refs/tags/*:refs/tags/*'];
    if (git.fullClone) {
      await runGit(['fetch', '-q', 'origin', ...everything], opts);
      await runGit(['fetch', '-q', 'origin', want], opts);
    } else {
      try {
        await runGit(['fetch', '-q', '--depth', '1', 'origin', want], opts);
      } catch (err) {
        // Servers without uploadpack.allowAnySHA1InWant refuse a bare commit: fetch everything and pick it locally.
        if (!isCommit) throw err;
        await runGit(['fetch', '-q', 'origin', ...everything], opts);
      }
    }
    await checkoutTarget(git, opts, isCommit ? want : 'FETCH_HEAD');
    if (git.upstreamRemoteUri) await runGit(['remote', 'add', 'upstream', splitUrlCredentials(git.upstreamRemoteUri).url], opts);
    const head = (await runGit(['rev-parse', 'HEAD'], opts)).trim();
    ctx.log(`checked out ${head}`);
  } catch (err) {
    throw new SourceError(`git clone of ${url} failed: ${(err as Error).message}`);
  }
}

/**
 * The directory a checkout goes into: new, or empty. Git reads config, hooks and attributes from a `.git` it finds
 * there, so a directory an earlier initializer (a snapshot) filled could run its writer's programs here.
 */
async function newCheckoutDir(root: string, dir: string, location: string): Promise<void> {
  try {
    await mkdirInside(root, dir, 'git checkout_location');
  } catch (err) {
    throw asWriteError(err);
  }
  const entries = await readdir(dir);
  if (entries.length) {
    throw new SourceError(`git checkout_location ${location || '.'} is not empty (it holds ${entries.slice(0, 3).join(', ')}${entries.length > 3 ? ', …' : ''}): a git checkout must go into an empty or new directory`);
  }
}

function asWriteError(err: unknown): Error {
  return err instanceof ContextWriteError ? new SourceError(err.message) : (err as Error);
}

/**
 * Makes a restored snapshot's repository safe to run git in: its `.git` came from a tar anyone could have written,
 * and a repository's own config, hooks and alternates can run programs or read local files. The config is replaced
 * by a minimal one whose origin is the initializer's (policy-checked) remote.
 */
async function usableWorkingCopy(git: GitInitializer, ctx: InitializerContext): Promise<void> {
  const dir = inside(ctx.root, git.checkoutLocation, 'checkout_location');
  const dotGit = join(dir, '.git');
  const st = await lstat(dotGit).catch(() => undefined);
  if (!st?.isDirectory()) throw new SourceError(`the snapshot has no git working copy at ${git.checkoutLocation || '.'}`);
  await checkRemote(git.remoteUri, 'git remote_uri', ctx.allowLocal);
  for (const p of ['hooks', 'objects/info/alternates', 'objects/info/http-alternates', 'commondir', 'info/attributes', 'config.worktree', 'worktrees']) {
    await rm(join(dotGit, p), { recursive: true, force: true });
  }
  const url = splitUrlCredentials(git.remoteUri).url;
  // Removed first: a `config` symlink would otherwise be written through.
  await rm(join(dotGit, 'config'), { force: true, recursive: true });
  await writeFile(join(dotGit, 'config'), '[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n');
  await runGit(['remote', 'add', 'origin', url], { cwd: dir, allowFile: ctx.allowLocal }).catch((err: Error) => {
    throw new SourceError(`the snapshot's git working copy at ${git.checkoutLocation || '.'} is unusable: ${err.message}`);
  });
}

/** Brings a restored working copy to the clone target, keeping local changes (stash, checkout, pop). */
async function checkoutInSnapshot(git: GitInitializer, ctx: InitializerContext, state: RunState, index: number): Promise<void> {
  const dir = inside(ctx.root, git.checkoutLocation, 'checkout_location');
  const opts = await gitOptions(git, ctx, state, index, dir);
  const pinned = ctx.resolvedCommits[String(index)];
  const want = wantOf(git, pinned);
  const isCommit = git.targetMode === CloneTargetMode.REMOTE_COMMIT || !!pinned;
  const who = ['-c', 'user.name=imgbuilder', '-c', 'user.email=imgbuilder@localhost'];
  try {
    const stash = await runGit([...who, 'stash', 'push', '--no-include-untracked'], opts);
    const stashed = !/No local changes to save/.test(stash);
    try {
      await runGit(['fetch', '-q', 'origin', want], opts);
    } catch (err) {
      if (!isCommit) throw err;
      await runGit(['fetch', '-q', 'origin', '+refs/heads/*:refs/remotes/origin/*', '+refs/tags/*:refs/tags/*'], opts);
    }
    await checkoutTarget(git, opts, isCommit ? want : 'FETCH_HEAD');
    if (stashed) await runGit([...who, 'stash', 'pop'], opts);
    if (git.upstreamRemoteUri) await runGit(['remote', 'add', 'upstream', splitUrlCredentials(git.upstreamRemoteUri).url], opts);
    const head = (await runGit(['rev-parse', 'HEAD'], opts)).trim();
    ctx.log(`prebuild snapshot: checked out ${head} at ${git.checkoutLocation || '.'}`);
  } catch (err) {
    throw new SourceError(`git checkout in the prebuild snapshot failed: ${(err as Error).message}`);
  }
}

/**
 * GET with the URL policy applied on every redirect hop, and a lookup that refuses link-local answers at connect
 * time (a redirect or a changed DNS answer must not reach the metadata endpoint).
 */
async function httpGet(url: string, what: string, signal: AbortSignal, timeoutMs: number, hops = 5): Promise<http.IncomingMessage> {
  let current = url;
  const deadline = AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]);
  for (let hop = 0; ; hop++) {
    asSource(() => checkHttpUrl(current, hop ? `${what} (redirect)` : what));
    const res = await new Promise<http.IncomingMessage>((resolvePromise, reject) => {
      const mod = current.startsWith('https:') ? https : http;
      const req = mod.get(current, { lookup: guardedLookup as never, signal: deadline, headers: { 'user-agent': 'imgbuilder' } }, resolvePromise);
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'EREFUSEDADDRESS') return reject(new SourceError(`${what}: ${err.message}`));
        reject(new Error(deadline.aborted && !signal.aborted ? 'timed out' : (err.code ?? err.message)));
      });
    });
    const status = res.statusCode ?? 0;
    if ([301, 302, 303, 307, 308].includes(status) && res.headers.location) {
      res.resume();
      if (hop >= hops) throw new SourceError(`${what}: more than ${hops} redirects`);
      current = new URL(res.headers.location, current).toString();
      continue;
    }
    return res;
  }
}

async function readBody(res: http.IncomingMessage, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > max) throw new Error('answer too large');
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

function overBudget(ctx: InitializerContext, state: RunState): string | undefined {
  if (!ctx.limits) return undefined;
  if (state.files > ctx.limits.maxFiles) return `build context has more than ${ctx.limits.maxFiles} files (IMGBUILDER_MAX_CONTEXT_FILES)`;
  if (state.bytes > ctx.limits.maxBytes) return `build context is larger than ${ctx.limits.maxBytes} bytes (IMGBUILDER_MAX_CONTEXT_BYTES)`;
  return undefined;
}

async function download(files: { url: string; filePath: string; digest: string }[], target: string, ctx: InitializerContext, state: RunState): Promise<void> {
  const base = inside(ctx.root, target, 'download target_location');
  for (const listed of files) {
    // The job carries URLs sealed (they often hold tokens); the source's own URL is the fallback for older jobs.
    const sealedUrl = ctx.downloadUrls?.[state.download++];
    const f = { ...listed, url: sealedUrl || listed.url };
    const dest = inside(base, f.filePath, 'download file_path');
    if (hasGitPart(target) || hasGitPart(f.filePath)) throw new SourceError(`download of ${f.filePath}: a .git path part is refused; git metadata may only come from a git initializer`);
    ctx.log(`downloading ${f.filePath}`);
    const out = await openInside(ctx.root, dest, `download of ${f.filePath}`).catch((err: unknown) => {
      throw asWriteError(err);
    });
    const body = await openDownload(f, ctx).catch(async (err: unknown) => {
      await out.close();
      throw err;
    });
    const hash = createHash('sha256');
    state.files++;
    let limit: string | undefined;
    try {
      await pipeline(
        body,
        new Transform({
          transform(chunk: Buffer, _enc, cb) {
            hash.update(chunk);
            state.bytes += chunk.length;
            limit = overBudget(ctx, state);
            cb(limit ? new SourceError(limit) : null, chunk);
          },
        }),
        out.createWriteStream(),
      );
    } catch (err) {
      if (limit) throw new SourceError(limit);
      throw new SourceError(`download of ${f.filePath} failed: ${(err as Error).message}`);
    }
    const got = `sha256:${hash.digest('hex')}`;
    if (got !== f.digest) throw new SourceError(`download of ${f.filePath}: digest mismatch (expected ${f.digest}, got ${got})`);
  }
}

async function openDownload(f: { url: string; filePath: string }, ctx: InitializerContext): Promise<Readable> {
  if (ctx.allowLocal && parseSourceUrl(f.url).kind === 'local') {
    const path = /^file:/i.test(f.url) ? fileURLToPath(f.url) : f.url;
    const stream = createReadStream(path);
    await new Promise<void>((ok, fail) => stream.once('open', () => ok()).once('error', (err: NodeJS.ErrnoException) => fail(new SourceError(`download of ${f.filePath} failed: ${err.code ?? err.message}`))));
    return stream;
  }
  // Messages name the file, never the URL: download URLs often carry tokens (presigned URLs).
  const res = await httpGet(f.url, `download of ${f.filePath}`, ctx.signal, 10 * 60_000).catch((err: Error) => {
    throw err instanceof SourceError ? err : new SourceError(`download of ${f.filePath} failed: ${err.message}`);
  });
  if (res.statusCode !== 200) {
    res.resume();
    throw new SourceError(`download of ${f.filePath} failed: HTTP ${res.statusCode}`);
  }
  return res;
}

/** A tar, optionally gzip-compressed, extracted into the context within the size and file caps. */
async function restoreSnapshot(name: string, fromVolume: boolean, ctx: InitializerContext, state: RunState, prebuild: boolean): Promise<void> {
  if (fromVolume) throw new SourceError(`snapshot ${name} is a volume snapshot; imgbuilder restores object-storage snapshots only`);
  // The API refused names outside the policy; checked again here, since the job is what the worker acts on.
  const { bucket, key } = asSource(() => checkSnapshotSource(name, { ownBucket: ctx.objects.bucket, sources: ctx.snapshotSources ?? [] }));
  ctx.log(`restoring snapshot ${name}`);
  let body: Readable;
  try {
    body = await ctx.objects.getStream(key, bucket);
  } catch (err) {
    const e = err as Error & { $metadata?: { httpStatusCode?: number } };
    const missing = e.name === 'NoSuchKey' || e.$metadata?.httpStatusCode === 404;
    throw new SourceError(`snapshot ${name} cannot be read: ${missing ? 'not found' : e.message}`, !missing);
  }
  const head = await peek(body).catch((err: Error) => {
    throw new SourceError(`snapshot ${name} cannot be read: ${err.message}`);
  });
  const gz = head[0] === 0x1f && head[1] === 0x8b;
  const root = ctx.root;
  let limit: string | undefined;
  const budgetError = () => new SourceError(`snapshot ${name}: ${limit}`);
  // Once refused, the rest of the archive is skipped without writing anything, and the source is stopped.
  const stop = () => process.nextTick(() => body.destroy(budgetError()));
  const extract = tar.extract(root, {
    ignore: (_name, header) => {
      const h = header as { type?: string; name: string; linkname?: string } | undefined;
      if (!h) return false;
      if (limit) return true;
      // Directories count too: a small gzip of millions of empty directories would exhaust inodes.
      if (h.type === 'file' || h.type === 'link' || h.type === 'symlink' || h.type === 'directory') state.files++;
      // Only a prebuild's working copies may hold git metadata; runInitializer sanitises those before git runs.
      if (!prebuild && hasGitPart(h.name)) limit = `it holds ${h.name.slice(0, 200)}: a .git path part is refused outside prebuild snapshots; git metadata may only come from a git initializer`;
      limit ??= overBudget(ctx, state);
      if (limit) {
        stop();
        return true;
      }
      // Links must stay inside the context; outside ones are dropped (the context check would refuse them).
      if (h.type === 'symlink' && h.linkname) {
        const target = resolve(dirname(join(root, h.name)), h.linkname);
        return target !== root && !target.startsWith(root + sep);
      }
      return false;
    },
    // Caps are enforced on file data as it is written: the first file past a cap fails the extraction, so a
    // decompression bomb stops there instead of filling the disk. (Failing inside `ignore` would leave tar-stream
    // an entry stream without an error listener, which takes the process down.)
    mapStream: ((fileStream: Readable) => {
      const counter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          state.bytes += chunk.length;
          limit ??= overBudget(ctx, state);
          cb(limit ? budgetError() : null, chunk);
        },
      });
      fileStream.on('error', () => undefined);
      if (limit) process.nextTick(() => counter.destroy(budgetError()));
      return fileStream.pipe(counter);
    }) as never,
    dmode: 0o755,
    fmode: 0o644,
  });
  try {
    if (gz) await pipeline(body, createGunzip(), extract);
    else await pipeline(body, extract);
  } catch (err) {
    if (limit) throw budgetError();
    throw new SourceError(`snapshot ${name} is not a valid tar archive: ${(err as Error).message}`);
  }
  if (limit) throw budgetError();
}

/** The first bytes of a stream (to tell gzip from tar), put back so the stream reads whole. */
async function peek(stream: Readable): Promise<Buffer> {
  for (;;) {
    const chunk = stream.read() as Buffer | null;
    if (chunk !== null) {
      stream.unshift(chunk);
      return chunk;
    }
    if (stream.readableEnded) return Buffer.alloc(0);
    await new Promise<void>((resolve, reject) => {
      const done = () => {
        stream.off('readable', done).off('end', done).off('error', fail);
        resolve();
      };
      const fail = (err: Error) => {
        stream.off('readable', done).off('end', done);
        reject(err);
      };
      stream.once('readable', done).once('end', done).once('error', fail);
    });
  }
}

async function emptyDir(dir: string): Promise<void> {
  for (const e of await readdir(dir)) await rm(join(dir, e), { recursive: true, force: true });
}
