import { execFileSync } from 'node:child_process';
import { ROOT } from './stack.js';

/** Starts the local stack (idempotent; a no-op when .ci/run already did). */
export default function setup(): void {
  execFileSync('bash', [`${ROOT}/infra/local/up.sh`], { stdio: ['ignore', 'ignore', 'inherit'] });
}
