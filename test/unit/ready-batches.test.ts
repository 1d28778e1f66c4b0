import { describe, expect, it } from 'vitest';
import { readyBatches } from '../../apps/api/src/grpc/ready-batches.js';

async function* source(): AsyncGenerator<string> {
  for (const s of ['a', 'b', 'c', 'd']) yield s;
  // Not ready within the turn: the batch so far goes out.
  await new Promise((r) => setTimeout(r, 5));
  yield 'e';
  yield 'f';
}

describe('readyBatches', () => {
  it('groups what is ready within one turn, and ends a batch at an item that is not', async () => {
    const got: string[][] = [];
    for await (const b of readyBatches(source(), (s) => s.length, 1_000)) got.push(b);
    expect(got).toEqual([['a', 'b', 'c', 'd'], ['e', 'f']]);
  });

  it('ends a batch at the size limit', async () => {
    const got: string[][] = [];
    for await (const b of readyBatches(source(), () => 2, 4)) got.push(b);
    expect(got).toEqual([['a', 'b'], ['c', 'd'], ['e', 'f']]);
  });

  it('ends the source when the reader stops early', async () => {
    let cleaned = false;
    async function* endless(): AsyncGenerator<number> {
      try {
        for (let i = 0; ; i++) yield i;
      } finally {
        cleaned = true;
      }
    }
    for await (const b of readyBatches(endless(), () => 1, 3)) {
      expect(b).toEqual([0, 1, 2]);
      break;
    }
    await new Promise((r) => setImmediate(r));
    expect(cleaned).toBe(true);
  });
});
