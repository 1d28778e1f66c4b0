import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { SecretBox } from '@imgbuilder/common/secret-box';
import { SealedForOtherUse } from '@imgbuilder/common/errors';

describe('SecretBox', () => {
  const box = SecretBox.fromKey(randomBytes(32).toString('base64'));

  it('opens a blob only for the context it was sealed for, and never echoes its content', () => {
    const sealed = box.seal({ password: 'hunter2-secret' }, 'build-a');
    expect(box.open(sealed, 'build-a')).toEqual({ password: 'hunter2-secret' });
    let err: unknown;
    try {
      box.open(sealed, 'build-b');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SealedForOtherUse);
    expect(String((err as Error).message)).not.toContain('hunter2');
  });

  it('refuses an altered blob and one sealed under another key', () => {
    const sealed = Buffer.from(box.seal({ a: 1 }, 'ctx'), 'base64');
    sealed[sealed.length - 1] ^= 1;
    expect(() => box.open(sealed.toString('base64'), 'ctx')).toThrow(SealedForOtherUse);
    const other = SecretBox.fromKey(randomBytes(32).toString('base64'));
    expect(() => other.open(box.seal({ a: 1 }, 'ctx'), 'ctx')).toThrow(SealedForOtherUse);
  });
});
