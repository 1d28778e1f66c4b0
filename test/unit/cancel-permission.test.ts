import { describe, expect, it } from 'vitest';
import type { Caller } from '@imgbuilder/common/access-tokens';
import { mayCancel } from '../../apps/api/src/control/cancel-permission.js';
import { buildCaller } from '../../apps/api/src/grpc/caller.js';

const ci: Caller = { name: 'ci', role: 'builder' };
const ops: Caller = { name: 'ops', role: 'admin' };
// Builds as their records attribute them (caller.ts's attributeBuild): `<token>/<triggered_by>`, or the token alone.
const ciForUser42 = 'ci/gitpod-user-42';
const ciItself = 'ci';

describe('who may cancel a build', () => {
  it('without tokens anyone may; admin any build; a viewer none', () => {
    expect(mayCancel(undefined, buildCaller(undefined, 'someone'), ciForUser42)).toBe(true);
    expect(mayCancel(ops, buildCaller(ops, ''), ciForUser42)).toBe(true);
    expect(mayCancel(ops, buildCaller(ops, 'gitpod-user-7'), ciItself)).toBe(true);
    expect(mayCancel({ name: 'ci', role: 'viewer' }, buildCaller({ name: 'ci', role: 'viewer' }, ''), ciItself)).toBe(false);
  });

  it('a builder cancels the builds it acts for (caller.ts actsFor), never another token\'s', () => {
    expect(mayCancel(ci, buildCaller(ci, 'gitpod-user-42'), ciForUser42)).toBe(true);
    // A token calling without triggered_by acts for all of its callers.
    expect(mayCancel(ci, buildCaller(ci, ''), ciForUser42)).toBe(true);
    expect(mayCancel(ci, buildCaller(ci, ''), ciItself)).toBe(true);
    // One of the token's callers may not cancel another's, nor the token's own.
    expect(mayCancel(ci, buildCaller(ci, 'gitpod-user-7'), ciForUser42)).toBe(false);
    expect(mayCancel(ci, buildCaller(ci, 'gitpod-user-7'), ciItself)).toBe(false);
    // triggered_by is what a caller says, not who it is: naming another token's caller gains nothing.
    const ci2: Caller = { name: 'ci-2', role: 'builder' };
    expect(mayCancel(ci2, buildCaller(ci2, ''), ciForUser42)).toBe(false);
    expect(mayCancel(ci2, buildCaller(ci2, 'gitpod-user-42'), ciForUser42)).toBe(false);
    const user42: Caller = { name: 'gitpod-user-42', role: 'builder' };
    expect(mayCancel(user42, buildCaller(user42, ''), ciForUser42)).toBe(false);
  });
});
