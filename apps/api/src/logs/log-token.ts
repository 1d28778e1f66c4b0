import { createHmac, timingSafeEqual } from 'node:crypto';
import { deriveKey } from '@imgbuilder/common/secret-box';

interface TokenBody {
  /** Build id. */
  b: string;
  /** Expiry, ms since the epoch. */
  e: number;
}

/** One signing key of log tokens and the id tokens name it by. */
export interface LogTokenKey {
  id: string;
  key: Buffer;
}

/**
 * The log-token keys: each derived from IMGBUILDER_SECRET_KEY and a key id (IMGBUILDER_LOG_TOKEN_KEY_ID), so a new id
 * revokes every token signed under the old one without touching the secret key (which would break queued jobs). The
 * previous id (IMGBUILDER_LOG_TOKEN_PREVIOUS_KEY_ID) is still accepted while a rotation is under way.
 */
export function logTokenKeys(secretKey: string | undefined, currentId: string, previousId?: string): { current: LogTokenKey; previous?: LogTokenKey } {
  const key = (id: string) => ({ id, key: deriveKey(secretKey, `supervisor log tokens ${id}`) });
  return { current: key(currentId), previous: previousId && previousId !== currentId ? key(previousId) : undefined };
}

const VERSION = 'lt1';

/**
 * Per-build tokens for the supervisor log endpoint (log_info.headers): `lt1.<key id>.<body>.<HMAC-SHA256>`, body and
 * MAC base64url. Any API pod checks one without shared state; each grants reading one build's log until it expires,
 * and for at most IMGBUILDER_LOG_TOKEN_TTL_AFTER_END once the build has ended (see `endedTooLongAgo`).
 */
export class LogTokens {
  constructor(
    private readonly keys: { current: LogTokenKey; previous?: LogTokenKey },
    private readonly ttlMs: number,
    /** How long tokens of a finished build stay good after its end. */
    private readonly ttlAfterEndMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  issue(buildId: string): string {
    const body = Buffer.from(JSON.stringify({ b: buildId, e: this.now() + this.ttlMs } satisfies TokenBody)).toString('base64url');
    const { id, key } = this.keys.current;
    return `${VERSION}.${id}.${body}.${mac(key, id, body)}`;
  }

  /** The build id the token grants, or undefined when it is malformed, forged, under a retired key, or expired. */
  verify(token: string | undefined): string | undefined {
    if (!token || token.length > 4096) return undefined;
    const [version, kid, body, sig, extra] = token.trim().split('.');
    if (version !== VERSION || !kid || !body || !sig || extra !== undefined) return undefined;
    const key = [this.keys.current, this.keys.previous].find((k) => k?.id === kid);
    if (!key) return undefined;
    const want = Buffer.from(mac(key.key, kid, body));
    const got = Buffer.from(sig);
    if (got.length !== want.length || !timingSafeEqual(got, want)) return undefined;
    let parsed: Partial<TokenBody>;
    try {
      parsed = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as Partial<TokenBody>;
    } catch {
      return undefined;
    }
    if (typeof parsed.b !== 'string' || typeof parsed.e !== 'number') return undefined;
    return parsed.e > this.now() ? parsed.b : undefined;
  }

  /** Whether a build that ended at `finishedAtMs` did so longer ago than its tokens may outlive it. */
  endedTooLongAgo(finishedAtMs: number | undefined): boolean {
    return finishedAtMs !== undefined && this.now() - finishedAtMs > this.ttlAfterEndMs;
  }
}

/** The MAC covers the version and key id too: a body cannot be moved under another key's name. */
function mac(key: Buffer, kid: string, body: string): string {
  return createHmac('sha256', key).update(`${VERSION}.${kid}.${body}`).digest('base64url');
}
