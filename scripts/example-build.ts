// Calls Build for a git repository and prints each status message, then the workspace image ref.
import { credentials } from '@grpc/grpc-js';
import { BuildRequest, BuildStatus, CloneTargetMode, ImageBuilderClient } from '@imgbuilder/proto';

const remote = process.argv[2];
const addr = process.env.IMGBUILDER_SERVER ?? '127.0.0.1:8080';
const client = new ImageBuilderClient(addr, credentials.createInsecure());

await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 30_000, (err) => (err ? reject(err) : resolve())));
const req = BuildRequest.fromPartial({
  source: { from: { $case: 'file', file: { source: { spec: { $case: 'git', git: { remoteUri: remote, targetMode: CloneTargetMode.REMOTE_HEAD } } }, dockerfilePath: 'Dockerfile' } } },
  forceRebuild: true,
  triggeredBy: 'example',
});
const started = Date.now();
let last: BuildStatus = BuildStatus.unknown;
let ref = '';
const stream = client.build(req);
stream.on('data', (m: { status: BuildStatus; ref: string; message: string; info?: { buildId: string } }) => {
  last = m.status;
  ref = m.ref;
  console.log(`${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s  ${BuildStatus[m.status].padEnd(12)} build ${m.info?.buildId ?? '-'} ${m.message}`);
});
stream.on('error', (err) => {
  console.error(`build call failed: ${err.message}`);
  process.exit(2);
});
stream.on('end', () => {
  if (last === BuildStatus.done_success) {
    console.log(`image: ${ref}`);
    process.exit(0);
  }
  process.exit(1);
});
