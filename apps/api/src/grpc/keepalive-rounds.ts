/** What one round hands every member: values made once per key in this round (e.g. one message per build). */
export interface KeepaliveRound {
  once<T>(key: string, make: () => Promise<T>): Promise<T>;
}

/**
 * One timer for every quiet stream's keepalive instead of one per stream: each round calls every member, and what
 * members of one build send is made once per round (the `running` message with its presigned log URL), not once
 * per stream. With 2,000 Build streams on a few builds that is a few presigns per round instead of 2,000.
 */
export class KeepaliveRounds {
  private readonly members = new Set<(round: KeepaliveRound) => void>();
  private timer?: NodeJS.Timeout;

  constructor(private readonly intervalMs: number) {}

  /** Calls `member` every round until the returned function is called. */
  add(member: (round: KeepaliveRound) => void): () => void {
    this.members.add(member);
    this.timer ??= setInterval(() => this.round(), this.intervalMs).unref();
    return () => {
      this.members.delete(member);
      if (this.members.size === 0 && this.timer) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
    };
  }

  private round(): void {
    const made = new Map<string, Promise<unknown>>();
    const round: KeepaliveRound = {
      once<T>(key: string, make: () => Promise<T>): Promise<T> {
        let p = made.get(key) as Promise<T> | undefined;
        if (!p) made.set(key, (p = make()));
        return p;
      },
    };
    for (const member of this.members) member(round);
  }
}
