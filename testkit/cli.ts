import { join } from 'node:path';
import { ROOT } from './stack.js';

/**
 * The CLI as the image runs it: the bundle of `npm run build` (test set-up makes it). `bin/imgbuilder.mjs` would
 * transpile the TypeScript through tsx on every call, about a second of CPU each; one component test runs it.
 */
export const CLI_BUNDLE = join(ROOT, 'apps/cli/dist/main.js');
