import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { credentials, status, type ClientWritableStream, type ServiceError } from '@grpc/grpc-js';
import { SnapshotUploadClient, type UploadRequest, type UploadResponse } from '@imgbuilder/proto';
import { alive } from '../support/scenarios.js';
import { startStack, type Stack } from '../../testkit/stack.js';

// The upload service is bounded: concurrent uploads, bytes on disk, an overall deadline, and a full disk (issue 12).
// The two describe blocks have a stack each and run at the same time; the tests sharing one stay in order.

interface OpenUpload {
  call: ClientWritableStream<UploadRequest>;
  result: Promise<{ res?: UploadResponse; err?: ServiceError }>;
}

function openUpload(client: SnapshotUploadClient, size: number): OpenUpload {
  let call!: ClientWritableStream<UploadRequest>;
  const result = new Promise<{ res?: UploadResponse; err?: ServiceError }>((resolve) => {
    call = client.upload((err: ServiceError | null, res?: UploadResponse) => resolve(err ? { err } : { res }));
  });
  call.on('error', () => undefined);
  call.write({ payload: { $case: 'metadata', metadata: { name: 'test', size: String(size) } } });
  return { call, result };
}

/** Uploads `bytes` in 16 KiB chunks; resolves with the outcome. */
async function upload(client: SnapshotUploadClient, bytes: Buffer) {
  const u = openUpload(client, bytes.length);
  for (let i = 0; i < bytes.length; i += 16 * 1024) u.call.write({ payload: { $case: 'chunk', chunk: bytes.subarray(i, i + 16 * 1024) } });
  u.call.end();
  return u.result;
}

describe.concurrent('upload limits', () => {
  let stack: Stack;
  let client: SnapshotUploadClient;
  beforeAll(async () => {
    stack = await startStack({
      apis: 1,
      workers: 0,
      env: { IMGBUILDER_MAX_CONCURRENT_UPLOADS: '1', IMGBUILDER_UPLOAD_DISK_BYTES: '64KiB', IMGBUILDER_UPLOAD_TIMEOUT: '3s' },
    });
    client = new SnapshotUploadClient(stack.apiAddrs[0], credentials.createInsecure());
  });
  afterAll(async () => {
    client?.close();
    await stack?.stop();
  });

  it.sequential('a second upload while one is in progress gets RESOURCE_EXHAUSTED naming IMGBUILDER_MAX_CONCURRENT_UPLOADS; the first one completes', async () => {
    const data = randomBytes(8 * 1024);
    const first = openUpload(client, data.length);
    first.call.write({ payload: { $case: 'chunk', chunk: data.subarray(0, 1024) } });
    // The first call is open on the server once a second one is refused; retry the probe until then (bounded).
    let second: { err?: ServiceError } = {};
    for (const deadline = Date.now() + 10_000; !second.err && Date.now() < deadline; ) {
      second = await upload(client, randomBytes(1024));
    }
    expect(second.err).toMatchObject({ code: status.RESOURCE_EXHAUSTED, details: expect.stringContaining('IMGBUILDER_MAX_CONCURRENT_UPLOADS') });
    first.call.write({ payload: { $case: 'chunk', chunk: data.subarray(1024) } });
    first.call.end();
    const { res, err } = await first.result;
    expect(err).toBeUndefined();
    expect(res?.size).toBe(String(data.length));
  });

  it.sequential('an upload beyond the bytes all uploads may hold on disk gets RESOURCE_EXHAUSTED naming IMGBUILDER_UPLOAD_DISK_BYTES', async () => {
    const { err } = await upload(client, randomBytes(100 * 1024));
    expect(err).toMatchObject({ code: status.RESOURCE_EXHAUSTED, details: expect.stringContaining('IMGBUILDER_UPLOAD_DISK_BYTES') });
    // Its bytes were given back: a small upload fits again.
    expect((await upload(client, randomBytes(1024))).err).toBeUndefined();
  });

  it.sequential('an upload that trickles past IMGBUILDER_UPLOAD_TIMEOUT ends DEADLINE_EXCEEDED', async () => {
    const u = openUpload(client, 1024);
    u.call.write({ payload: { $case: 'chunk', chunk: randomBytes(1) } });
    // One byte now and then keeps the idle timeout away; the overall deadline still ends it.
    const trickle = setInterval(() => u.call.write({ payload: { $case: 'chunk', chunk: randomBytes(1) } }), 500);
    try {
      const { err } = await u.result;
      expect(err).toMatchObject({ code: status.DEADLINE_EXCEEDED, details: expect.stringContaining('IMGBUILDER_UPLOAD_TIMEOUT') });
    } finally {
      clearInterval(trickle);
      u.call.end();
    }
  });
});

describe.concurrent('a full disk under the upload temp dir (small tmpfs)', () => {
  let mount: string;
  let stack: Stack;
  let client: SnapshotUploadClient;
  beforeAll(async () => {
    mount = mkdtempSync(join(tmpdir(), 'imgbuilder-tmpfs-'));
    // Room for the small upload, not for the 32 MiB one.
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', mount]);
    stack = await startStack({ apis: 0, workers: 0 });
    // The stack's one API, writing its temp files to the small tmpfs.
    const api = await stack.startApi({ TMPDIR: mount });
    client = new SnapshotUploadClient(stack.apiAddrs[stack.apis.indexOf(api)], credentials.createInsecure());
  });
  afterAll(async () => {
    client?.close();
    await stack?.stop();
    if (mount) {
      execFileSync('umount', [mount]);
      rmSync(mount, { recursive: true, force: true });
    }
  });

  it('ENOSPC ends the upload with RESOURCE_EXHAUSTED; the API stays up and takes the next upload', async () => {
    const { err } = await upload(client, randomBytes(32 * 1024 * 1024));
    expect(err).toMatchObject({ code: status.RESOURCE_EXHAUSTED, details: expect.stringContaining('ran out of disk space') });
    expect(stack.apis.every(alive)).toBe(true);
    const small = randomBytes(4 * 1024);
    const ok = await upload(client, small);
    expect(ok.err).toBeUndefined();
    expect(ok.res?.size).toBe(String(small.length));
  });
});
