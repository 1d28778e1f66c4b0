import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AccessTokens, bearerToken, hashToken, newToken, roleAtLeast } from '@imgbuilder/common/access-tokens';

const file = (content: unknown) => {
  const path = join(mkdtempSync(join(tmpdir(), 'imgbuilder-tokens-unit-')), 'tokens.json');
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
};

describe('access tokens', () => {
  it('hashes as `printf %s TOKEN | sha256sum` does, and makes 256-bit tokens', () => {
    expect(hashToken('test')).toBe('9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08');
    const t = newToken();
    expect(t).toMatch(/^imgb_[A-Za-z0-9_-]{43}$/);
    expect(newToken()).not.toBe(t);
  });

  it('finds the caller of a token and nobody for others', () => {
    const a = newToken();
    const b = newToken();
    const tokens = AccessTokens.load(file({ tokens: [{ name: 'a', role: 'viewer', sha256: hashToken(a) }, { name: 'b', role: 'admin', sha256: hashToken(b) }] }));
    expect(tokens.identify(a)).toEqual({ name: 'a', role: 'viewer' });
    expect(tokens.identify(b)).toEqual({ name: 'b', role: 'admin' });
    expect(tokens.identify(`${a}x`)).toBeUndefined();
    expect(tokens.identify('')).toBeUndefined();
  });

  it('orders roles viewer < builder < admin', () => {
    expect(roleAtLeast('admin', 'builder')).toBe(true);
    expect(roleAtLeast('builder', 'builder')).toBe(true);
    expect(roleAtLeast('viewer', 'builder')).toBe(false);
  });

  it('reads only `Bearer <token>` authorization values', () => {
    expect(bearerToken('Bearer abc')).toBe('abc');
    expect(bearerToken('bearer abc')).toBe('abc');
    expect(bearerToken('Basic abc')).toBeUndefined();
    expect(bearerToken('Bearer a b')).toBeUndefined();
    expect(bearerToken(undefined)).toBeUndefined();
  });

  it('refuses a file that is not JSON, lists no token, repeats a name, or holds something other than a hash', () => {
    expect(() => AccessTokens.load(file('not json'))).toThrow(/IMGBUILDER_TOKENS_FILE: cannot read .* as JSON/);
    expect(() => AccessTokens.load(join(tmpdir(), 'no-such-imgbuilder-tokens.json'))).toThrow(/ENOENT/);
    expect(() => AccessTokens.load(file({ tokens: [] }))).toThrow(/lists no token/);
    const sha256 = hashToken('x');
    expect(() => AccessTokens.load(file({ tokens: [{ name: 'a', role: 'viewer', sha256 }, { name: 'a', role: 'admin', sha256 }] }))).toThrow(/"a" is listed twice/);
    expect(() => AccessTokens.load(file({ tokens: [{ name: 'a', role: 'viewer', sha256: 'imgb_plaintext-token' }] }))).toThrow(/tokens\.0\.sha256/);
    expect(() => AccessTokens.load(file({ tokens: [{ name: 'a', role: 'viewer', sha256: 'imgb_plaintext-token' }] }))).not.toThrow(/plaintext/);
  });
});
