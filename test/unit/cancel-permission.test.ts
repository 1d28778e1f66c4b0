import { describe, expect, it } from 'vitest';
import { callerOf, describeCaller, parseCaller } from '@imgbuilder/common/build-job';
import { mayCancel } from '../../apps/api/src/control/cancel-permission.js';

const byCi = callerOf({ tokenName: 'ci', triggeredBy: 'gitpod-user-42' });
const anonymous = callerOf({ triggeredBy: 'someone' });

describe('who may cancel a build', () => {
  it('without tokens anyone may; admin any build; a builder only those queued under its token; a viewer none', () => {
    expect(mayCancel(undefined, byCi)).toBe(true);
    expect(mayCancel(undefined, undefined)).toBe(true);
    expect(mayCancel({ name: 'ops', role: 'admin' }, byCi)).toBe(true);
    expect(mayCancel({ name: 'ops', role: 'admin' }, undefined)).toBe(true);
    expect(mayCancel({ name: 'ci', role: 'builder' }, byCi)).toBe(true);
    expect(mayCancel({ name: 'ci-2', role: 'builder' }, byCi)).toBe(false);
    // triggered_by is what the builder said, not who it is: a builder named like it gains nothing.
    expect(mayCancel({ name: 'gitpod-user-42', role: 'builder' }, byCi)).toBe(false);
    expect(mayCancel({ name: 'someone', role: 'builder' }, anonymous)).toBe(false);
    expect(mayCancel({ name: 'ci', role: 'builder' }, undefined)).toBe(false);
    expect(mayCancel({ name: 'ci', role: 'viewer' }, byCi)).toBe(false);
  });

  it('reads and names callers as callerOf makes them', () => {
    expect(parseCaller(byCi)).toEqual({ tokenName: 'ci', triggeredBy: 'gitpod-user-42' });
    expect(parseCaller('not json')).toEqual({ tokenName: '', triggeredBy: '' });
    expect(describeCaller(byCi)).toBe('ci (triggered_by gitpod-user-42)');
    expect(describeCaller(callerOf({ tokenName: 'ci', triggeredBy: 'ci' }))).toBe('ci');
    expect(describeCaller(anonymous)).toBe('someone');
    expect(describeCaller(callerOf({ triggeredBy: '' }))).toBe('anonymous');
  });
});
