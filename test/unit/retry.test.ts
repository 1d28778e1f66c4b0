import { describe, expect, it } from 'vitest';
import { retry } from '@imgbuilder/common/retry';

describe('retry', () => {
  it('stops after the given attempts and rethrows the last error', async () => {
    let calls = 0;
    await expect(retry(async () => { calls++; throw new Error(`fail ${calls}`); }, { attempts: 3, delayMs: () => 1 })).rejects.toThrow('fail 3');
    expect(calls).toBe(3);
  });

  it('does not retry errors the predicate refuses', async () => {
    let calls = 0;
    await expect(retry(async () => { calls++; throw new Error('fatal'); }, { attempts: 5, delayMs: () => 1, retriable: () => false })).rejects.toThrow('fatal');
    expect(calls).toBe(1);
  });

  it('returns the first success and reports each retried failure', async () => {
    const seen: number[] = [];
    const out = await retry(async (attempt) => { if (attempt < 3) throw new Error('not yet'); return attempt; }, { attempts: 5, delayMs: () => 1, onRetry: (_e, a) => seen.push(a) });
    expect(out).toBe(3);
    expect(seen).toEqual([1, 2]);
  });

  it('gives up when the next wait would pass the deadline', async () => {
    let calls = 0;
    await expect(retry(async () => { calls++; throw new Error('down'); }, { deadlineMs: 1_000, delayMs: () => 600 })).rejects.toThrow('down');
    expect(calls).toBe(2);
  });
});
