import { readdir } from 'node:fs/promises';
import { CloneTargetMode, GitAuthMethod, type GitInitializer } from '@imgbuilder/proto';
import { runGit, splitUrlCredentials, type GitCredentials, type RunGitOptions } from '@imgbuilder/common/git';
import { checkGitConfig, checkSourceUrl, parseSourceUrl, SECRET_GIT_CONFIG } from '@imgbuilder/common/source-policy';
import { checkResolvedUrl } from '@imgbuilder/common/fetch-policy';
import { asWriteError, inside, mkdirInside } from './context-fs.js';
import { httpGet, readBody } from './http-get.js';
import type { InitializerContext, RunState } from './initializer-context.js';
import { asSource, SourceError } from '../errors.js';

const GIT_TIMEOUT_MS = 15 * 60_000;

/**
 * The remote passes the source and fetch policies, by name and by what its host resolves to now. Git's own
 * connections (redirects included) are checked again by the fetch proxy runGit puts them through.
 */
export async function checkRemote(url: string, what: string, allowLocal: boolean): Promise<void> {
  asSource(() => checkSourceUrl(url, what, allowLocal));
  if (parseSourceUrl(url).kind === 'local') return;
  await checkResolvedUrl(url, what).catch((e: Error) => {
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
    const res = await httpGet(sealed.ots, 'git auth_ots', ctx.signal, 30_000, 5, { showPath: false }).catch((err: Error) => {
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
export async function gitOptions(git: GitInitializer, ctx: InitializerContext, state: RunState, index: number, cwd: string): Promise<RunGitOptions> {
  const config = ctx.gitSecrets[index]?.config ?? git.config?.customConfig ?? {};
  asSource(() => checkGitConfig(config));
  ctx.addSecrets(Object.entries(config).filter(([k]) => SECRET_GIT_CONFIG.test(k)).map(([, v]) => v));
  const credentials = await credentialsFor(git, ctx, state, index);
  if (credentials?.password) ctx.addSecrets([credentials.password]);
  return { cwd, credentials, config, allowFile: ctx.allowLocal, signal: ctx.signal, timeoutMs: GIT_TIMEOUT_MS, what: 'git remote_uri' };
}

/** What to fetch: the commit (REMOTE_COMMIT, or the one the API pinned), else the branch; LOCAL_BRANCH starts at HEAD. */
export function wantOf(git: GitInitializer, pinned: string | undefined): string {
  if (git.targetMode === CloneTargetMode.REMOTE_COMMIT) return git.cloneTaget;
  if (pinned) return pinned;
  return git.targetMode === CloneTargetMode.REMOTE_BRANCH ? git.cloneTaget : 'HEAD';
}

/** Checks out the fetched target the way Gitpod's content service does for each mode. */
export async function checkoutTarget(git: GitInitializer, opts: RunGitOptions, commitish: string): Promise<void> {
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

/** A git initializer: a fresh clone of its target into checkout_location. */
export async function gitClone(git: GitInitializer, ctx: InitializerContext, state: RunState, index: number): Promise<void> {
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
