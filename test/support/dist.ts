import { spawnSync } from 'node:child_process';
import { ROOT } from './stack.js';

let built = false;

/**
 * Runs `npm run build` once per test process: the image's entry point starts the compiled bundles
 * (apps/<app>/dist/main.js), so tests that start it need them current. Throws with the build's output on failure.
 */
export function buildDist(): void {
  if (built) return;
  const res = spawnSync('npm', ['run', 'build'], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  if (res.status !== 0) throw new Error(`npm run build failed (${res.status ?? res.signal}):\n${res.stdout}${res.stderr}`);
  built = true;
}
