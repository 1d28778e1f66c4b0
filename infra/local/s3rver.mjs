#!/usr/bin/env node
// Local S3-compatible server for imgbuilder development and tests.
//
// Usage: node infra/local/s3rver.mjs [--address 127.0.0.1] [--port 4568] [--directory DIR]
// (defaults also from IMGBUILDER_LOCAL_S3_PORT / IMGBUILDER_LOCAL_DIR).
//
// s3rver accepts any well-formed signature (default credentials S3RVER/S3RVER) and does not
// verify it: it is a test double, never a security boundary. Buckets are not created here;
// the application creates its own bucket.
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..');
// s3rver is CommonJS and a devDependency of the repository root.
const require = createRequire(path.join(repoRoot, 'package.json'));
const S3rver = require('s3rver');

const stateDir = process.env.IMGBUILDER_LOCAL_DIR || '/tmp/imgbuilder-local';
const { values } = parseArgs({
  options: {
    address: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: process.env.IMGBUILDER_LOCAL_S3_PORT || '4568' },
    directory: { type: 'string', default: path.join(stateDir, 's3') },
    // s3rver's own (colourised, path-less) winston/koa-logger output; off by default in favour of
    // the plain access log below.
    verbose: { type: 'boolean', default: false },
  },
});

const port = Number(values.port);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`s3rver.mjs: invalid port ${values.port}`);
  process.exit(2);
}
mkdirSync(values.directory, { recursive: true });

const server = new S3rver({
  address: values.address,
  port,
  directory: values.directory,
  silent: !values.verbose,
  resetOnClose: false,
});

try {
  const addr = await server.run();
  // One plain line per request: time, method, path, status, duration.
  server.httpServer.on('request', (req, res) => {
    const start = process.hrtime.bigint();
    res.on('close', () => {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      console.log(`${new Date().toISOString()} "${req.method} ${req.url}" ${res.statusCode} ${ms.toFixed(1)}ms`);
    });
  });
  console.log(`s3rver listening on http://${addr.address}:${addr.port} (directory ${values.directory})`);
} catch (err) {
  console.error(`s3rver.mjs: failed to start: ${err?.stack || err}`);
  process.exit(1);
}

let stopping = false;
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.on(sig, () => {
    if (stopping) return;
    stopping = true;
    console.log(`s3rver: ${sig} received, shutting down`);
    // Keep-alive connections can hold close() open; do not wait for them forever.
    setTimeout(() => process.exit(0), 3000).unref();
    server.close().then(
      () => process.exit(0),
      () => process.exit(0),
    );
    server.httpServer?.closeIdleConnections?.();
  });
}
