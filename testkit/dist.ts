import { spawnSync } from 'node:child_process';
import { ROOT } from './stack.js';

/**
 * Runs `npm run build` (the set-up of the tiers that start the bundles does, once per test run): tests start the
 * compiled bundles (apps/<app>/dist/main.js) as the image does, so they must be current. Throws with the build's
 * output on failure.
 */
export function buildDist(): void {
  // Set-ups run in vitest's own process (each tier may load this module anew): the second finds this run's bundles.
  const run = globalThis as { imgbuilderBundlesBuilt?: boolean };
  if (run.imgbuilderBundlesBuilt) return;
  const res = spawnSync('npm', ['run', 'build'], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  if (res.status !== 0) throw new Error(`npm run build failed (${res.status ?? res.signal}):\n${res.stdout}${res.stderr}`);
  run.imgbuilderBundlesBuilt = true;
}
