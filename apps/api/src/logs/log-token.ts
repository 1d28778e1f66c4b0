import type { SecretBox } from '@imgbuilder/common/secret-box';

interface TokenBody {
  /** Purpose: a sealed value made for anything else never passes as a log token. */
  p: 'build-log';
  /** Build id. */
  b: string;
  /** Expiry, ms since the epoch. */
  e: number;
}

/**
 * Per-build tokens for the supervisor log endpoint (log_info.headers). Sealed with IMGBUILDER_SECRET_KEY, so any API
 * pod can check one without shared state; each grants reading one build's log until it expires.
 */
export class LogTokens {
  constructor(
    private readonly secrets: SecretBox,
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  issue(buildId: string): string {
    const body: TokenBody = { p: 'build-log', b: buildId, e: this.now() + this.ttlMs };
    return this.secrets.seal(body);
  }

  /** The build id the token grants, or undefined when it is malformed, forged or expired. */
  verify(token: string | undefined): string | undefined {
    if (!token || token.length > 4096) return undefined;
    let body: Partial<TokenBody>;
    try {
      body = this.secrets.open<Partial<TokenBody>>(token.trim());
    } catch {
      return undefined;
    }
    if (body?.p !== 'build-log' || typeof body.b !== 'string' || typeof body.e !== 'number') return undefined;
    return body.e > this.now() ? body.b : undefined;
  }
}
