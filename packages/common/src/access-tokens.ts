import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { invalidConfiguration } from './config-error.js';

/** Each role includes the ones before it. */
export const ROLES = ['viewer', 'builder', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export const roleAtLeast = (have: Role, need: Role) => ROLES.indexOf(have) >= ROLES.indexOf(need);

export interface Caller {
  name: string;
  role: Role;
  /** May use the installation's registry credentials (BuildRegistryAuth allow_all / selective); admins always may. */
  installationAuth?: boolean;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

const TokensFile = z.object({
  tokens: z
    .array(
      z.object({
        name: z.string().regex(/^[A-Za-z0-9._@-]{1,64}$/, 'letters, digits, . _ @ - only (at most 64)'),
        role: z.enum(ROLES),
        sha256: z.string().regex(SHA256_HEX, 'the lowercase hex SHA-256 of the token (64 characters): `imgbuilder token <name>` prints it'),
        installationAuth: z.boolean().optional(),
      }),
    )
    .min(1, 'lists no token'),
});

/**
 * The hash stored for a token. Tokens are 32 random bytes (see newToken), so a plain SHA-256 is enough: there is no
 * password to guess, only a file that must not hand out usable secrets.
 */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** A fresh token: `imgb_` and 43 base64url characters (256 random bits). */
export function newToken(): string {
  return `imgb_${randomBytes(32).toString('base64url')}`;
}

/** The callers of IMGBUILDER_TOKENS_FILE, found by the token they present. */
export class AccessTokens {
  private constructor(private readonly entries: { caller: Caller; hash: Buffer }[]) {}

  static fromEntries(entries: { name: string; role: Role; sha256: string; installationAuth?: boolean }[]): AccessTokens {
    return new AccessTokens(entries.map((e) => ({ caller: { name: e.name, role: e.role, ...(e.installationAuth ? { installationAuth: true } : {}) }, hash: Buffer.from(e.sha256, 'hex') })));
  }

  /** Reads the tokens file; the error names the file and what is wrong, never a hash. */
  static load(path: string): AccessTokens {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(path, 'utf8'));
    } catch (err) {
      throw invalidConfiguration([`IMGBUILDER_TOKENS_FILE: cannot read ${path} as JSON: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`]);
    }
    const parsed = TokensFile.safeParse(raw);
    if (!parsed.success) {
      throw invalidConfiguration(parsed.error.issues.map((i) => `IMGBUILDER_TOKENS_FILE ${path}: ${i.path.join('.') || '(top level)'}: ${i.message}`));
    }
    const names = new Set<string>();
    for (const t of parsed.data.tokens) {
      if (names.has(t.name)) throw invalidConfiguration([`IMGBUILDER_TOKENS_FILE ${path}: the name "${t.name}" is listed twice (names become triggered_by)`]);
      names.add(t.name);
    }
    return AccessTokens.fromEntries(parsed.data.tokens);
  }

  /** The caller of the entry named `name` (names are unique), e.g. to check a dashboard session still stands. */
  named(name: string): Caller | undefined {
    return this.entries.find((e) => e.caller.name === name)?.caller;
  }

  /**
   * The caller a token belongs to. Every entry is compared, each in constant time, so the answer's timing says
   * nothing about which hash (or how much of one) matched.
   */
  identify(token: string): Caller | undefined {
    const presented = Buffer.from(hashToken(token), 'hex');
    let found: Caller | undefined;
    for (const e of this.entries) {
      if (timingSafeEqual(presented, e.hash) && !found) found = e.caller;
    }
    return found;
  }
}

/** The token of an `authorization: Bearer <token>` value. */
export function bearerToken(header: string | undefined): string | undefined {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return m?.[1];
}
