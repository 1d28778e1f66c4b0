// Preloaded by `npm run api` and `npm run worker` (node --import): the env file the local stack writes
// (infra/local/up.sh: its Redis password, a random IMGBUILDER_SECRET_KEY, its endpoints) fills in what the environment
// leaves unset, so both start right after `npm run local:up`. Only these development scripts read it; the bundles and
// the image never do.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseEnv } from 'node:util';

const file = join(process.env.IMGBUILDER_LOCAL_DIR || '/tmp/imgbuilder-local', 'env');
let text = '';
try {
  text = readFileSync(file, 'utf8');
} catch {
  // No local stack here: the environment alone decides.
}
for (const [name, value] of Object.entries(parseEnv(text))) {
  if (process.env[name] === undefined) process.env[name] = value;
}
