import { CloneTargetMode, GitAuthMethod, type GitInitializer } from '@imgbuilder/proto';
import { ImgbuilderError } from '@imgbuilder/common/errors';
import { GitError, lsRemote, splitUrlCredentials, type GitCredentials } from '@imgbuilder/common/git';

const CACHE_MS = 5_000;

/**
 * Resolves mutable git targets (head, branch) to the commit they point at now, with `git ls-remote`, so the base
 * ref names content. Answers are cached briefly per remote and target: a burst of identical requests asks once.
 */
export class GitRemoteResolver {
  private readonly cache = new Map<string, { at: number; commit: Promise<string | undefined> }>();

  constructor(private readonly allowLocal: boolean) {}

  async resolve(git: GitInitializer, credentials?: GitCredentials): Promise<string | undefined> {
    if (git.targetMode === CloneTargetMode.REMOTE_COMMIT) return undefined;
    // OTS secrets are single-use and belong to the worker's clone; such sources hash their clone target as given.
    if (git.config?.authentication === GitAuthMethod.BASIC_AUTH_OTS) return undefined;
    const { url, credentials: inUrl } = splitUrlCredentials(git.remoteUri);
    const creds = credentials ?? inUrl ?? (git.config?.authentication === GitAuthMethod.BASIC_AUTH ? { username: git.config.authUser, password: git.config.authPassword } : undefined);
    const target = git.targetMode === CloneTargetMode.REMOTE_HEAD ? 'HEAD' : git.cloneTaget;
    const key = `${url}\n${target}\n${creds?.username ?? ''}`;
    const hit = this.cache.get(key);
    if (hit && Date.now() - hit.at < CACHE_MS) return hit.commit;
    const commit = lsRemote(url, target, { credentials: creds, timeoutMs: 30_000 }).then(
      (c) => {
        if (!c) throw new ImgbuilderError('INVALID_ARGUMENT', `git remote has no ${target === 'HEAD' ? 'HEAD' : `branch or tag "${target}"`}`);
        return c;
      },
      (err: unknown) => {
        const msg = err instanceof GitError ? err.message : String(err);
        if (/Authentication failed|could not read Username|403|401/i.test(msg)) throw new ImgbuilderError('UNAUTHENTICATED', `cannot read git remote: ${msg}`);
        if (/not found|does not appear to be a git repository|Repository not found/i.test(msg)) throw new ImgbuilderError('NOT_FOUND', `cannot read git remote: ${msg}`);
        throw new ImgbuilderError('UNAVAILABLE', `cannot reach git remote: ${msg}`);
      },
    );
    this.cache.set(key, { at: Date.now(), commit });
    commit.catch(() => this.cache.delete(key));
    if (this.cache.size > 10_000) this.cache.clear();
    return commit;
  }
}
