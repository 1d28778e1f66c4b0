import { buildDist } from '../../testkit/dist.js';

/** The component tier starts the app bundles (apps/<app>/dist/main.js): they must be current. */
export default function setup(): void {
  buildDist();
}
