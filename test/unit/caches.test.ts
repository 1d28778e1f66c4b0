import { describe, expect, it } from 'vitest';
import { ImageExistence } from '../../apps/api/src/plan/image-existence.js';
import { deferred, manualClock, within } from '../support/clock.js';

describe('ImageExistence (the API’s workspace-image existence cache)', () => {
  /** The registry check, answered by the test; `calls` counts registry requests. */
  function registry() {
    const pending: { ref: string; answer: ReturnType<typeof deferred<boolean>> }[] = [];
    return {
      pending,
      check: (ref: string) => {
        const answer = deferred<boolean>();
        pending.push({ ref, answer });
        return answer.promise;
      },
    };
  }

  it('concurrent questions about one ref share one registry request', async () => {
    const r = registry();
    const cache = new ImageExistence(r.check, 5_000, manualClock().now);
    const asks = [cache.exists('reg/ws:a'), cache.exists('reg/ws:a'), cache.exists('reg/ws:a')];
    expect(r.pending).toHaveLength(1);
    r.pending[0].answer.resolve(true);
    expect(await within(Promise.all(asks))).toEqual([true, true, true]);
  });

  it('remembers a yes until its ttl ends, then asks again', async () => {
    const r = registry();
    const clock = manualClock();
    const cache = new ImageExistence(r.check, 5_000, clock.now);
    const first = cache.exists('reg/ws:a');
    r.pending[0].answer.resolve(true);
    expect(await within(first)).toBe(true);
    clock.advance(4_999);
    expect(await within(cache.exists('reg/ws:a'))).toBe(true);
    expect(r.pending).toHaveLength(1);
    clock.advance(2);
    const again = cache.exists('reg/ws:a');
    expect(r.pending).toHaveLength(2);
    r.pending[1].answer.resolve(false);
    expect(await within(again)).toBe(false);
  });

  it('never remembers a no, nor an error', async () => {
    const r = registry();
    const cache = new ImageExistence(r.check, 5_000, manualClock().now);
    const no = cache.exists('reg/ws:a');
    r.pending[0].answer.resolve(false);
    expect(await within(no)).toBe(false);
    const failing = cache.exists('reg/ws:a');
    expect(r.pending).toHaveLength(2);
    r.pending[1].answer.reject(new Error('registry answered 503'));
    await expect(within(failing)).rejects.toThrow('registry answered 503');
    const yes = cache.exists('reg/ws:a');
    expect(r.pending).toHaveLength(3);
    r.pending[2].answer.resolve(true);
    expect(await within(yes)).toBe(true);
  });

  it('keys by ref: another ref is its own request', async () => {
    const r = registry();
    const cache = new ImageExistence(r.check, 5_000, manualClock().now);
    const a = cache.exists('reg/ws:a');
    const b = cache.exists('reg/ws:b');
    expect(r.pending.map((p) => p.ref)).toEqual(['reg/ws:a', 'reg/ws:b']);
    r.pending[0].answer.resolve(true);
    r.pending[1].answer.resolve(false);
    expect(await within(Promise.all([a, b]))).toEqual([true, false]);
  });
});
