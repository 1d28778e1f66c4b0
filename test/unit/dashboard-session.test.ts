import { describe, expect, it } from 'vitest';
import { AccessTokens, hashToken } from '@imgbuilder/common/access-tokens';
import { deriveKey } from '@imgbuilder/common/secret-box';
import { DashboardSessions, SESSION_COOKIE } from '../../apps/api/src/dashboard/session.js';
import { HttpError, intParam, safeNext } from '../../apps/api/src/dashboard/request-input.js';

const TOKEN = 'imgb_session-test-token-000000000000000000000';
const tokens = AccessTokens.fromEntries([{ name: 'alice', role: 'admin', sha256: hashToken(TOKEN) }]);
const key = deriveKey(Buffer.alloc(32, 3).toString('base64'), 'dashboard sessions v1');

describe('dashboard sessions', () => {
  it('carry the caller, not the token, and expire', () => {
    let now = 1_000_000;
    const sessions = new DashboardSessions(key, tokens, 12 * 3_600_000, () => now);
    const session = sessions.issue({ name: 'alice', role: 'admin' });
    expect(session).not.toContain(TOKEN);
    expect(sessions.verify(session)).toEqual({ name: 'alice', role: 'admin' });
    now += 12 * 3_600_000;
    expect(sessions.verify(session)).toBeUndefined();
  });

  it('refuse forged, altered, foreign-key and stale-role sessions', () => {
    const sessions = new DashboardSessions(key, tokens, 60_000);
    const good = sessions.issue({ name: 'alice', role: 'admin' });
    const [body, mac] = good.split('.');
    const forgedBody = Buffer.from(JSON.stringify({ n: 'alice', r: 'admin', e: Date.now() + 1e9 })).toString('base64url');
    expect(sessions.verify(`${forgedBody}.${mac}`)).toBeUndefined();
    expect(sessions.verify(`${body}.${mac.slice(0, -2)}AA`)).toBeUndefined();
    expect(sessions.verify(`${body}.${mac}.x`)).toBeUndefined();
    const other = new DashboardSessions(deriveKey(Buffer.alloc(32, 4).toString('base64'), 'dashboard sessions v1'), tokens, 60_000);
    expect(sessions.verify(other.issue({ name: 'alice', role: 'admin' }))).toBeUndefined();
    // A name the tokens file no longer lists with that role.
    expect(sessions.verify(sessions.issue({ name: 'alice', role: 'viewer' }))).toBeUndefined();
    expect(sessions.verify(sessions.issue({ name: 'bob', role: 'admin' }))).toBeUndefined();
    expect(sessions.verify('')).toBeUndefined();
  });

  it('set a __Host- cookie: Secure, HttpOnly, SameSite=Strict, Path=/', () => {
    const sessions = new DashboardSessions(key, tokens, 12 * 3_600_000);
    expect(sessions.cookie('abc.def')).toBe(`${SESSION_COOKIE}=abc.def; Path=/; Max-Age=43200; HttpOnly; Secure; SameSite=Strict`);
    expect(SESSION_COOKIE.startsWith('__Host-')).toBe(true);
    expect(sessions.cookie('')).toMatch(/Max-Age=0/);
  });

  it('keys differ by purpose', () => {
    const secret = Buffer.alloc(32, 3).toString('base64');
    expect(deriveKey(secret, 'a').equals(deriveKey(secret, 'b'))).toBe(false);
    expect(deriveKey(secret, 'a').equals(Buffer.from(secret, 'base64'))).toBe(false);
  });
});

describe('dashboard input', () => {
  it('next stays on the dashboard', () => {
    expect(safeNext('/builds/x?status=failure#log')).toBe('/builds/x?status=failure#log');
    for (const bad of ['/\t/evil.example/', '//evil.example/', '/\\evil.example/', 'https://evil.example/', '\\\\evil.example', '/.//evil.example/x', 'javascript:alert(1)', '/\n/evil.example']) {
      expect(safeNext(bad), JSON.stringify(bad)).toBe('/');
    }
    expect(safeNext(null)).toBe('/');
  });

  it('numeric parameters are bounded integers', () => {
    const q = (s: string) => new URLSearchParams(s);
    expect(intParam(q(''), 'from', 0, 0, 100)).toBe(0);
    expect(intParam(q('from=42'), 'from', 0, 0, 100)).toBe(42);
    for (const bad of ['1e21', '-1', '1.5', '0x10', '101', ' 1', 'NaN', '99999999999999999999']) {
      expect(() => intParam(q(`from=${encodeURIComponent(bad)}`), 'from', 0, 0, 100), bad).toThrow(HttpError);
    }
    expect(() => intParam(q('from=1e21'), 'from', 0, 0, 100)).toThrow('from must be an integer from 0 to 100');
  });
});
