import { LRUCache } from 'lru-cache';

/** Refs whose "yes" one process remembers; the least recently asked are forgotten first. */
const MAX_KNOWN = 50_000;

/**
 * Answers "does this workspace image exist?" for the API's hot path. Concurrent questions about one ref share one
 * registry request, and a "yes" is remembered for a few seconds: workspace refs name content, so an image that
 * exists keeps existing (short of someone deleting it from the registry, which a client then sees for at most
 * `positiveTtlMs`). A "no" is never remembered: a build that just finished must be seen at once. Nor is an error.
 */
export class ImageExistence {
  private readonly known: LRUCache<string, true>;

  constructor(
    check: (ref: string) => Promise<boolean>,
    /** How long a "yes" is reused; positive (lru-cache reads 0 as for ever). */
    positiveTtlMs: number,
    /** Milliseconds on a monotonic clock; tests pass their own. */
    now: () => number = () => performance.now(),
  ) {
    this.known = new LRUCache<string, true>({
      max: MAX_KNOWN,
      ttl: positiveTtlMs,
      ttlResolution: 0,
      perf: { now },
      // An entry evicted while its check runs still answers the callers waiting on it.
      ignoreFetchAbort: true,
      // Undefined leaves nothing cached: that is how a "no" is answered.
      fetchMethod: async (ref) => ((await check(ref)) ? true : undefined),
    });
  }

  async exists(ref: string): Promise<boolean> {
    return (await this.known.fetch(ref)) === true;
  }
}
