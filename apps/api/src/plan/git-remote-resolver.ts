import { createHash } from 'node:crypto';
import { CloneTargetMode, GitAuthMethod, type GitInitializer } from '@imgbuilder/proto';
import { FetchRefused, GitError, GitRemoteAuthFailed, GitRemoteNotFound, GitRemoteUnavailable, GitResolverBusy, GitTargetMissing, LimiterBusyError } from '@imgbuilder/common/errors';
import { lsRemote, splitUrlCredentials, type GitCredentials } from '@imgbuilder/common/git';
import { Limiter } from '@imgbuilder/common/limiter';
import { LRUCache } from 'lru-cache';
import { quote } from '@imgbuilder/common/client-text';
import { inSpan } from '@imgbuilder/common/tracing';

export interface GitRemoteResolverOptions {
  allowLocal: boolean;
  /** IMGBUILDER_LS_REMOTE_CACHE: how long an answer is reused per remote and target; 0 reuses none. */
  cacheMs?: number;
  /** IMGBUILDER_LS_REMOTE_CONCURRENCY: ls-remote processes this resolver runs at once (one resolver per process). */
  concurrency?: number;
  /** IMGBUILDER_LS_REMOTE_TIMEOUT: one ls-remote taking longer is killed. */
  timeoutMs?: number;
  /** Milliseconds on a monotonic clock for the cache's expiry; tests pass their own. */
  now?: () => number;
}

/** What one ls-remote needs; the cache key hashes the credentials instead of holding them. */
interface LsRemoteQuery {
  url: string;
  target: string;
  credentials?: GitCredentials;
  config: Record<string, string>;
}

/** Answers one process remembers; the least recently used are forgotten first. */
const MAX_CACHED = 10_000;

/**
 * Resolves mutable git targets (head, branch) to the commit they point at now, with `git ls-remote`, so the base
 * ref names content. Answers are cached briefly per remote and target: a burst of identical requests asks once.
 */
export class GitRemoteResolver {
  /** Commits by remote, target and credentials. Concurrent asks share one ls-remote; failures are not kept. */
  private readonly cache: LRUCache<string, string, LsRemoteQuery>;
  private readonly allowLocal: boolean;
  private readonly timeoutMs: number;
  private readonly concurrency: number;
  /** No reuse: every call asks, though concurrent calls still share the one ls-remote in flight. */
  private readonly noReuse: boolean;
  /** Every git initializer of a request may need an ls-remote: without a cap one request spawns thousands. */
  private readonly limiter: Limiter;

  constructor(o: GitRemoteResolverOptions) {
    this.allowLocal = o.allowLocal;
    this.timeoutMs = o.timeoutMs ?? 30_000;
    this.concurrency = o.concurrency ?? 8;
    // A call waits for a slot at most as long as one run may take: under a flood of hanging remotes, requests fail
    // fast with UNAVAILABLE instead of queueing behind hours of backlog.
    this.limiter = new Limiter(this.concurrency, this.timeoutMs);
    const now = o.now ?? (() => performance.now());
    const cacheMs = o.cacheMs ?? 5_000;
    this.noReuse = cacheMs === 0;
    this.cache = new LRUCache<string, string, LsRemoteQuery>({
      max: MAX_CACHED,
      // lru-cache reads a ttl of 0 as for ever; without reuse each fetch is forced instead (see resolve).
      ttl: this.noReuse ? 1 : cacheMs,
      ttlResolution: 0,
      perf: { now },
      // An entry evicted while its ls-remote runs still answers the callers waiting on it.
      ignoreFetchAbort: true,
      fetchMethod: (_key, _stale, { context }) => this.lsRemote(context),
    });
  }

  /**
   * The commit, or undefined when the target is hashed as given (REMOTE_COMMIT, one-time secrets). Git connects
   * through the fetch proxy (runGit): a remote or redirect the fetch policy refuses rejects with FetchRefused.
   */
  async resolve(git: GitInitializer): Promise<string | undefined> {
    if (git.targetMode === CloneTargetMode.REMOTE_COMMIT) return undefined;
    // OTS secrets are single-use and belong to the worker's clone; such sources hash their clone target as given.
    if (git.config?.authentication === GitAuthMethod.BASIC_AUTH_OTS) return undefined;
    const { url, credentials: inUrl } = splitUrlCredentials(git.remoteUri);
    const creds = git.config?.authentication === GitAuthMethod.BASIC_AUTH ? { username: git.config.authUser, password: git.config.authPassword } : inUrl;
    // LOCAL_BRANCH is a new local branch off the remote head (Gitpod's content service), so HEAD decides its content.
    const target = git.targetMode === CloneTargetMode.REMOTE_BRANCH ? git.cloneTaget : 'HEAD';
    const config = git.config?.customConfig ?? {};
    // Keyed by the credentials too: a caller without access must not learn a private commit from the cache.
    const secret = createHash('sha256').update(JSON.stringify([creds?.username ?? '', creds?.password ?? '', Object.entries(config).sort()])).digest('hex');
    const key = `${url}\n${target}\n${secret}`;
    return this.cache.fetch(key, { context: { url, target, credentials: creds, config }, forceRefresh: this.noReuse });
  }

  private lsRemote(query: LsRemoteQuery): Promise<string> {
    return inSpan('git ls-remote', () => this.lsRemoteOnce(query), { attributes: { 'imgbuilder.git.remote': query.url, 'imgbuilder.git.target': query.target } });
  }

  private lsRemoteOnce({ url, target, credentials, config }: LsRemoteQuery): Promise<string> {
    return this.limiter.run(() => lsRemote(url, target, { credentials, config, allowFile: this.allowLocal, timeoutMs: this.timeoutMs, what: 'git remote_uri' })).then(
      (c) => {
        if (!c) throw new GitTargetMissing(target, `git remote has no ${target === 'HEAD' ? 'HEAD' : `branch or tag ${quote(target)}`}`);
        return c;
      },
      (err: unknown) => {
        if (err instanceof LimiterBusyError) {
          throw new GitResolverBusy(this.concurrency, `too many git remotes are being resolved at once (IMGBUILDER_LS_REMOTE_CONCURRENCY=${this.concurrency}); retry shortly`);
        }
        if (err instanceof FetchRefused) throw err;
        const msg = err instanceof GitError ? err.message : String(err);
        if (/Authentication failed|could not read Username|403|401/i.test(msg)) throw new GitRemoteAuthFailed(`cannot read git remote: ${msg}`);
        if (/not found|does not appear to be a git repository|Repository not found/i.test(msg)) throw new GitRemoteNotFound(`cannot read git remote: ${msg}`);
        throw new GitRemoteUnavailable(`cannot reach git remote: ${msg}`);
      },
    );
  }
}
