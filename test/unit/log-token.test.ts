import { describe, expect, it } from 'vitest';
import { SecretBox } from '@imgbuilder/common/secret-box';
import { LogTokens, logTokenKeys } from '../../apps/api/src/logs/log-token.js';

const SECRET = Buffer.alloc(32, 9).toString('base64');
const HOUR = 3_600_000;

describe('supervisor log tokens', () => {
  it('grant one build until they expire', () => {
    let now = 1_000_000;
    const tokens = new LogTokens(logTokenKeys(SECRET, '1'), HOUR, 24 * HOUR, () => now);
    const t = tokens.issue('build-1');
    expect(t).toMatch(/^lt1\.1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/);
    expect(tokens.verify(t)).toBe('build-1');
    now += HOUR;
    expect(tokens.verify(t)).toBeUndefined();
  });

  it('have their own key: a new key id revokes old tokens, the previous id is accepted during a rotation', () => {
    const old = new LogTokens(logTokenKeys(SECRET, '1'), HOUR, 24 * HOUR).issue('b');
    expect(new LogTokens(logTokenKeys(SECRET, '2'), HOUR, 24 * HOUR).verify(old)).toBeUndefined();
    expect(new LogTokens(logTokenKeys(SECRET, '2', '1'), HOUR, 24 * HOUR).verify(old)).toBe('b');
    // Another secret with the same id, an altered token, a key id swapped in, a sealed blob: all refused.
    expect(new LogTokens(logTokenKeys(Buffer.alloc(32, 1).toString('base64'), '1'), HOUR, 24 * HOUR).verify(old)).toBeUndefined();
    const both = new LogTokens(logTokenKeys(SECRET, '2', '1'), HOUR, 24 * HOUR);
    expect(both.verify(old.replace(/^lt1\.1\./, 'lt1.2.'))).toBeUndefined();
    const [v, kid, body, mac] = old.split('.');
    const forged = Buffer.from(JSON.stringify({ b: 'other', e: Date.now() + HOUR })).toString('base64url');
    expect(both.verify([v, kid, forged, mac].join('.'))).toBeUndefined();
    expect(both.verify([v, kid, body, mac, ''].join('.'))).toBeUndefined();
    expect(both.verify(SecretBox.fromKey(SECRET).seal({ p: 'build-log', b: 'b', e: Date.now() + HOUR }))).toBeUndefined();
  });

  it("lapse IMGBUILDER_LOG_TOKEN_TTL_AFTER_END after their build's end", () => {
    const now = 10 * 24 * HOUR;
    const tokens = new LogTokens(logTokenKeys(SECRET, '1'), 7 * 24 * HOUR, 24 * HOUR, () => now);
    expect(tokens.endedTooLongAgo(undefined)).toBe(false);
    expect(tokens.endedTooLongAgo(now - 23 * HOUR)).toBe(false);
    expect(tokens.endedTooLongAgo(now - 25 * HOUR)).toBe(true);
  });
});
