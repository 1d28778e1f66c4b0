import { describe, expect, it } from 'vitest';
import { InvalidRequest } from '@imgbuilder/common/errors';
import { actsFor, buildCaller } from '../../apps/api/src/grpc/caller.js';

describe('caller identity', () => {
  const gitpod = { name: 'gitpod-server', role: 'builder' as const };

  it('with tokens, the token name prefixes what the client sends as triggered_by', () => {
    expect(buildCaller(gitpod, 'user-1')).toEqual({ id: 'gitpod-server/user-1', token: 'gitpod-server', triggeredBy: 'user-1' });
    expect(buildCaller(gitpod, '')).toEqual({ id: 'gitpod-server', token: 'gitpod-server', triggeredBy: '' });
    // A client naming another token's caller stays under its own token.
    expect(buildCaller({ name: 'ci', role: 'builder' }, 'gitpod-server/user-1').id).toBe('ci/gitpod-server/user-1');
  });

  it('without tokens, the caller is triggered_by', () => {
    expect(buildCaller(undefined, 'imgbuilder-cli')).toEqual({ id: 'imgbuilder-cli', triggeredBy: 'imgbuilder-cli' });
    expect(buildCaller(undefined, undefined).id).toBe('');
  });

  it('refuses an oversized triggered_by or one with control characters', () => {
    expect(() => buildCaller(gitpod, 'x'.repeat(257))).toThrow(InvalidRequest);
    expect(() => buildCaller(undefined, 'a\nb')).toThrow(/triggered_by must be at most 256 characters/);
  });

  it('acts for its own builds; a token without triggered_by for all of its callers', () => {
    expect(actsFor(buildCaller(gitpod, 'user-1'), 'gitpod-server/user-1')).toBe(true);
    expect(actsFor(buildCaller(gitpod, 'user-1'), 'gitpod-server/user-2')).toBe(false);
    expect(actsFor(buildCaller(gitpod, ''), 'gitpod-server/user-2')).toBe(true);
    expect(actsFor(buildCaller(gitpod, ''), 'gitpod-server-2/user-2')).toBe(false);
    expect(actsFor(buildCaller(undefined, ''), 'gitpod-server/user-2')).toBe(false);
  });
});
