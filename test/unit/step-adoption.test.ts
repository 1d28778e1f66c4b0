import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CgroupLimits } from '../../apps/worker/src/builder/cgroup-limits.js';
import { markersOf } from '../../apps/worker/src/builder/build-sandbox.js';

/**
 * Adoption of a BuildKit step against a cgroup v1 layout in plain directories: regular files take any write, so
 * a "moved" process never leaves its source, as when moves silently do not take.
 */
const root = mkdtempSync(join(tmpdir(), 'imgbuilder-adopt-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
for (const c of ['memory', 'cpu', 'pids']) mkdirSync(join(root, c));

describe('moving a BuildKit step into its build\'s cgroup fails closed', () => {
  it('reports a step that never shows up, one that ended unseen, and one whose processes do not move', async () => {
    const cg = (await CgroupLimits.detect(root))!;
    expect(cg.describe()).toContain('cgroup v1');
    expect(await cg.adopt('b1', 'step-missing', '/docker/buildkit/step-missing', async () => true, 50)).toBe('missing');
    expect(await cg.adopt('b1', 'step-ended', '/docker/buildkit/step-ended', async () => false, 1_000)).toBe('ended');
    mkdirSync(join(root, 'memory/docker/buildkit/step-stuck'), { recursive: true });
    writeFileSync(join(root, 'memory/docker/buildkit/step-stuck/cgroup.procs'), '4242\n');
    expect(await cg.adopt('b1', 'step-stuck', '/docker/buildkit/step-stuck', async () => true, 50)).toBe('stuck');
  });
});

describe('step markers', () => {
  const marker = 'imgbuilder-build-0f4c-1a2b3c4d5e6f7a8b.invalid';
  it('are read from a RUN step\'s no_proxy and from a frontend\'s build args, nowhere else', () => {
    expect(markersOf(['PATH=/bin', `no_proxy=${marker}`, `NO_PROXY=${marker}`])).toEqual([marker, marker]);
    expect(markersOf(['PATH=/bin', `BUILDKIT_FRONTEND_OPT_3=build-arg:no_proxy=${marker}`, 'BUILDKIT_SESSION_ID=x'])).toEqual([marker]);
    expect(markersOf([`FOO=${marker}`, 'no_proxy=localhost', `BUILDKIT_FRONTEND_OPT_1=build-arg:other=${marker}`])).toEqual([]);
  });
});
