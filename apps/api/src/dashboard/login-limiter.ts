import { LRUCache } from 'lru-cache';

/** Failed logins one client address may make per window before every login from it is refused until it ends. */
export const MAX_FAILED_LOGINS = 10;
const WINDOW_MS = 60_000;
/** Addresses remembered at once: bounded memory, whatever the number of clients. */
const MAX_ADDRESSES = 10_000;

/**
 * Counts failed dashboard logins per client address in a fixed window from the first failure. Tokens carry 256 random
 * bits, so this is not what keeps them safe: it keeps a guessing client from costing CPU and filling the log.
 */
export class LoginLimiter {
  private readonly failures = new LRUCache<string, { count: number }>({ max: MAX_ADDRESSES, ttl: WINDOW_MS, noUpdateTTL: true });

  /** Whether `addr` may try to log in now. */
  allows(addr: string): boolean {
    return (this.failures.get(addr)?.count ?? 0) < MAX_FAILED_LOGINS;
  }

  failed(addr: string): void {
    const entry = this.failures.get(addr);
    if (entry) entry.count++;
    else this.failures.set(addr, { count: 1 });
  }

  /** Seconds until `addr` may try again. */
  retryAfterS(addr: string): number {
    return Math.max(1, Math.ceil(this.failures.getRemainingTTL(addr) / 1000));
  }
}
