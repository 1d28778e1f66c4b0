// Generates packages/proto/src/gen from proto/ with ts-proto. `--check` regenerates into a temp dir and
// fails when the committed code differs, so CI catches a proto edit without regeneration.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, mkdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { tmpdir } from 'node:os';

const root = new URL('..', import.meta.url).pathname;
const committed = join(root, 'packages/proto/src/gen');
const check = process.argv.includes('--check');
const out = check ? mkdtempSync(join(tmpdir(), 'imgbuilder-gen-')) : committed;

if (!check) rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
execFileSync(join(root, 'node_modules/.bin/protoc'), [
  `--plugin=protoc-gen-ts_proto=${join(root, 'node_modules/.bin/protoc-gen-ts_proto')}`,
  `--ts_proto_out=${out}`,
  '--ts_proto_opt=outputServices=grpc-js,esModuleInterop=true,env=node,oneof=unions,forceLong=string,useExactTypes=false,importSuffix=.js',
  `--proto_path=${join(root, 'proto')}`,
  'imgbuilder.proto',
  'content-service-api/initializer.proto',
  'upload.proto',
  'control.proto',
  'cache.proto',
  'buildkit/control.proto',
], { stdio: 'inherit' });

if (check) {
  const list = (dir) => readdirSync(dir, { recursive: true }).filter((f) => statSync(join(dir, f)).isFile()).sort();
  const a = list(committed);
  const b = list(out);
  const stale = a.length !== b.length || b.some((f, i) => a[i] !== f || readFileSync(join(out, f), 'utf8') !== readFileSync(join(committed, f), 'utf8'));
  rmSync(out, { recursive: true, force: true });
  if (stale) {
    console.error(`generated code in ${relative(root, committed)} is stale: run npm run gen`);
    process.exit(1);
  }
  console.log('generated protocol code is up to date');
}
