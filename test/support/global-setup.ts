import { execFileSync } from 'node:child_process';
import { buildDist } from '../../testkit/dist.js';
import { ROOT } from '../../testkit/stack.js';

/** Starts the local stack (idempotent; a no-op when .ci/run already did) and bundles the apps the tests start. */
export default function setup(): void {
  execFileSync('bash', [`${ROOT}/infra/local/up.sh`], { stdio: ['ignore', 'ignore', 'inherit'] });
  buildDist();
}
