import { lstat, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CloneTargetMode, type GitInitializer, type PrebuildInitializer } from '@imgbuilder/proto';
import { runGit, splitUrlCredentials } from '@imgbuilder/common/git';
import { inside } from './context-fs.js';
import { checkoutTarget, checkRemote, gitClone, gitOptions, wantOf } from './git.js';
import type { InitializerContext, RunState } from './initializer-context.js';
import { restoreSnapshot } from './snapshot.js';
import { SourceError } from '../errors.js';

/**
 * A prebuild initializer: its snapshot, then each git working copy in it brought to its target. A snapshot that
 * cannot be used falls back to fresh clones.
 */
export async function materializePrebuild(prebuild: PrebuildInitializer, ctx: InitializerContext, state: RunState): Promise<void> {
  const gits = prebuild.git;
  const first = state.git;
  state.git += gits.length;
  const snap = prebuild.prebuild;
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

async function emptyDir(dir: string): Promise<void> {
  for (const e of await readdir(dir)) await rm(join(dir, e), { recursive: true, force: true });
}
