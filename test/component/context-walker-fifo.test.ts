import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { contextDir, paths } from '../support/context-dir.js';

// Node cannot make a fifo itself: mkfifo(1) does, so this case is not in the unit tier.
describe('context walker', () => {
  it('skips what a tar of the context cannot carry (a fifo)', async () => {
    const dir = contextDir({ Dockerfile: '' });
    execFileSync('mkfifo', [join(dir, 'pipe')]);
    expect(await paths(dir)).toEqual(['Dockerfile']);
  });
});
