/**
 * Answers "does this workspace image exist?" for the API's hot path. Concurrent questions about one ref share one
 * registry request, and a "yes" is remembered for a few seconds: workspace refs name content, so an image that
 * exists keeps existing (short of someone deleting it from the registry, which a client then sees for at most
 * `positiveTtlMs`). A "no" is never remembered: a build that just finished must be seen at once.
 */
export class ImageExistence {
  private readonly inFlight = new Map<string, Promise<boolean>>();
  private readonly known = new Map<string, number>();

  constructor(
    private readonly check: (ref: string) => Promise<boolean>,
    private readonly positiveTtlMs: number,
  ) {}

  async exists(ref: string): Promise<boolean> {
    const until = this.known.get(ref);
    if (until !== undefined) {
      if (until > Date.now()) return true;
      this.known.delete(ref);
    }
    let pending = this.inFlight.get(ref);
    if (!pending) {
      pending = this.check(ref).finally(() => this.inFlight.delete(ref));
      this.inFlight.set(ref, pending);
    }
    const yes = await pending;
    if (yes && this.positiveTtlMs > 0) {
      if (this.known.size > 50_000) this.known.clear();
      this.known.set(ref, Date.now() + this.positiveTtlMs);
    }
    return yes;
  }
}
