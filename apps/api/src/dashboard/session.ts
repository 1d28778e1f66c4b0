import { createHmac, timingSafeEqual } from 'node:crypto';
import { ROLES, type AccessTokens, type Caller, type Role } from '@imgbuilder/common/access-tokens';

/**
 * `__Host-`: browsers take it only with Secure, Path=/ and no Domain, so no other host or path can plant or shadow it.
 * Browsers count http://localhost and 127.0.0.1 as secure, so the local stack keeps working over plain HTTP.
 */
export const SESSION_COOKIE = '__Host-imgbuilder_session';

interface SessionBody {
  /** The token's name. */
  n: string;
  r: Role;
  /** Expiry, ms since the epoch. */
  e: number;
}

/**
 * Dashboard sessions: the login page exchanges a token for one, so the cookie never holds the token itself. A session
 * is `<body>.<HMAC-SHA256>`, both base64url, under a key derived from IMGBUILDER_SECRET_KEY (any API pod checks it
 * without shared state). It carries the caller's name and role and an expiry; it stands only while the tokens file
 * still lists that name with that role, so removing or demoting a token ends its sessions at the next restart.
 */
export class DashboardSessions {
  constructor(
    private readonly key: Buffer,
    private readonly tokens: AccessTokens,
    readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  issue(caller: Caller): string {
    const body = Buffer.from(JSON.stringify({ n: caller.name, r: caller.role, e: this.now() + this.ttlMs } satisfies SessionBody)).toString('base64url');
    return `${body}.${this.mac(body)}`;
  }

  /** The caller of a session, or undefined when it is malformed, forged, expired or its token is gone. */
  verify(session: string | undefined): Caller | undefined {
    if (!session || session.length > 1024) return undefined;
    const [body, mac, extra] = session.split('.');
    if (!body || !mac || extra !== undefined) return undefined;
    const want = Buffer.from(this.mac(body));
    const got = Buffer.from(mac);
    if (got.length !== want.length || !timingSafeEqual(got, want)) return undefined;
    let parsed: Partial<SessionBody>;
    try {
      parsed = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as Partial<SessionBody>;
    } catch {
      return undefined;
    }
    if (typeof parsed.n !== 'string' || !ROLES.includes(parsed.r as Role) || typeof parsed.e !== 'number' || parsed.e <= this.now()) return undefined;
    const current = this.tokens.named(parsed.n);
    return current?.role === parsed.r ? current : undefined;
  }

  /** The Set-Cookie value carrying `session`, or clearing it when `session` is empty. */
  cookie(session: string): string {
    const maxAge = session ? Math.floor(this.ttlMs / 1000) : 0;
    return `${SESSION_COOKIE}=${session}; Path=/; Max-Age=${maxAge}; HttpOnly; Secure; SameSite=Strict`;
  }

  private mac(body: string): string {
    return createHmac('sha256', this.key).update(body).digest('base64url');
  }
}
