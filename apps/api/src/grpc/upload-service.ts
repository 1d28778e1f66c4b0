import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { type sendUnaryData, type Server, type ServerReadableStream, type ServiceError } from '@grpc/grpc-js';
import { SnapshotUploadService, type UploadRequest, type UploadResponse } from '@imgbuilder/proto';
import { InvalidRequest, StorageFull, StorageUnavailable, UploadCancelled, UploadCapacityReached, UploadTimedOut, UploadTooLarge } from '@imgbuilder/common/errors';
import type { Logger } from '@imgbuilder/common/logger';
import type { ObjectStore } from '@imgbuilder/common/object-store';
import { formatBytes } from '@imgbuilder/common/byte-size';
import { OWN_SNAPSHOT_PREFIX } from '@imgbuilder/common/source-policy';
import { toServiceError } from './grpc-status.js';
import { addService, type Guard } from './server.js';

/** An upload that sends nothing for this long is dropped, so a stalled client frees its temp file. */
const IDLE_TIMEOUT_MS = 120_000;

/**
 * `imgbuilder.upload.v1.SnapshotUpload`: receives a build context over the API connection and stores it in the object
 * store as `snapshots/<sha256>.tar.gz` (`.tar` when not gzip-compressed) in the default bucket, so CLI users need no
 * storage credentials.
 *
 * The bytes go to a temp file first (never held in memory), hashed and counted on the way; the cap is enforced while
 * streaming. Then one PutObject, skipped when an object of that content already exists. The content-derived key
 * makes an unchanged directory map to the same snapshot name, hence the same workspace ref and a cache hit.
 */
export interface UploadServiceOptions {
  /** Where snapshots are stored (its default bucket). */
  objects: ObjectStore;
  log: Logger;
  /** Larger uploads are refused with RESOURCE_EXHAUSTED (IMGBUILDER_MAX_UPLOAD_BYTES, 1GiB). */
  maxBytes: number;
  /** Uploads received at once; more are refused with RESOURCE_EXHAUSTED (IMGBUILDER_MAX_CONCURRENT_UPLOADS, 16). */
  maxConcurrent?: number;
  /** Bytes all uploads in progress may hold in temp files together (IMGBUILDER_UPLOAD_DISK_BYTES, 4GiB). */
  maxDiskBytes?: number;
  /** An upload, receiving and storing, ends within this long (IMGBUILDER_UPLOAD_TIMEOUT, 30m). */
  timeoutMs?: number;
}

export class UploadService {
  private active = 0;
  private diskBytes = 0;
  private readonly objects: ObjectStore;
  private readonly log: Logger;
  private readonly maxBytes: number;
  private readonly limits: { maxConcurrent: number; maxDiskBytes: number; timeoutMs: number };

  constructor(opts: UploadServiceOptions) {
    ({ objects: this.objects, log: this.log, maxBytes: this.maxBytes } = opts);
    this.limits = { maxConcurrent: opts.maxConcurrent ?? 16, maxDiskBytes: opts.maxDiskBytes ?? 4 * 2 ** 30, timeoutMs: opts.timeoutMs ?? 30 * 60_000 };
  }

  register(server: Server, guard?: Guard): void {
    const impl = { upload: (call: ServerReadableStream<UploadRequest, UploadResponse>, cb: sendUnaryData<UploadResponse>) => void this.upload(call, cb) };
    addService(server, SnapshotUploadService, impl, guard);
  }

  private async upload(call: ServerReadableStream<UploadRequest, UploadResponse>, cb: sendUnaryData<UploadResponse>): Promise<void> {
    if (this.active >= this.limits.maxConcurrent) {
      call.pause();
      cb(toServiceError(new UploadCapacityReached('IMGBUILDER_MAX_CONCURRENT_UPLOADS', `the server is receiving ${this.active} uploads, its limit (IMGBUILDER_MAX_CONCURRENT_UPLOADS); retry shortly`), this.log, 'Upload'));
      return;
    }
    this.active++;
    let dir: string | undefined;
    const held = { bytes: 0 };
    let outcome: { res?: UploadResponse; err?: ServiceError };
    try {
      dir = await mkdtemp(join(tmpdir(), 'imgbuilder-upload-'));
      outcome = { res: await this.receiveAndStore(call, join(dir, 'snapshot'), held) };
    } catch (err) {
      // The client may still be sending: stop reading so its writes fail fast instead of filling buffers.
      call.pause();
      if (call.cancelled || (err as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE') {
        this.log.debug('snapshot upload cancelled by the client');
        outcome = { err: toServiceError(new UploadCancelled('upload cancelled'), this.log, 'Upload') };
      } else {
        outcome = { err: toUploadError(err, this.log) };
      }
    }
    // Disk space and the slot are given back before the client hears the outcome, so its next upload finds them free.
    if (dir) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    this.diskBytes -= held.bytes;
    this.active--;
    if (outcome.err) cb(outcome.err);
    else cb(null, outcome.res!);
  }

  private async receiveAndStore(call: ServerReadableStream<UploadRequest, UploadResponse>, path: string, held: { bytes: number }): Promise<UploadResponse> {
    const hash = createHash('sha256');
    const file = createWriteStream(path);
    // A full disk must end this upload, not the process: without a listener the stream's 'error' would crash it.
    let fileError: NodeJS.ErrnoException | undefined;
    file.on('error', (err) => {
      fileError = err;
      stop.abort('file');
    });
    const deadline = setTimeout(() => stop.abort('deadline'), this.limits.timeoutMs);
    let bytes = 0;
    let name = '';
    let expected = 0;
    let first = true;
    let gzip = false;
    const stop = new AbortController();
    let timer = setTimeout(() => stop.abort('idle'), IDLE_TIMEOUT_MS);
    const cancelled = () => stop.abort('cancelled');
    call.once('cancelled', cancelled);
    try {
      const messages = abortable(call as AsyncIterable<UploadRequest>, stop.signal);
      for await (const msg of messages) {
        clearTimeout(timer);
        timer = setTimeout(() => stop.abort('idle'), IDLE_TIMEOUT_MS);
        const p = msg.payload;
        if (first) {
          first = false;
          if (p?.$case !== 'metadata') throw new InvalidRequest('the first upload message must carry metadata');
          name = p.metadata.name.slice(0, 200);
          expected = Number(p.metadata.size);
          if (expected > this.maxBytes) throw tooLarge(this.maxBytes, `announced ${expected} bytes`);
          continue;
        }
        if (p?.$case !== 'chunk') throw new InvalidRequest('only the first upload message may carry metadata');
        if (bytes === 0) gzip = p.chunk[0] === 0x1f && p.chunk[1] === 0x8b;
        bytes += p.chunk.length;
        if (bytes > this.maxBytes) throw tooLarge(this.maxBytes);
        if (this.diskBytes + p.chunk.length > this.limits.maxDiskBytes) {
          throw new UploadCapacityReached('IMGBUILDER_UPLOAD_DISK_BYTES', `the server's space for uploads in progress is full (IMGBUILDER_UPLOAD_DISK_BYTES=${formatBytes(this.limits.maxDiskBytes)}); retry later`);
        }
        this.diskBytes += p.chunk.length;
        held.bytes += p.chunk.length;
        hash.update(p.chunk);
        if (!file.write(p.chunk)) await drained(file).catch(() => undefined);
        if (fileError) break;
      }
      if (fileError) throw diskError(fileError);
      if (stop.signal.reason === 'deadline') throw new UploadTimedOut(`upload took longer than ${this.limits.timeoutMs / 1000}s (IMGBUILDER_UPLOAD_TIMEOUT)`);
      if (stop.signal.aborted) throw new UploadTimedOut(`upload sent nothing for ${IDLE_TIMEOUT_MS / 1000}s`);
      if (first) throw new InvalidRequest('empty upload: no metadata and no data');
      if (expected && bytes !== expected) throw new InvalidRequest(`upload announced ${expected} bytes but sent ${bytes}`);
      if (bytes === 0) throw new InvalidRequest('empty upload: no data');
      file.end();
      await once(file, 'close').catch(() => undefined);
      if (fileError) throw diskError(fileError);
    } finally {
      clearTimeout(timer);
      clearTimeout(deadline);
      call.off('cancelled', cancelled);
      // Closed before the temp dir goes: an open descriptor would keep a deleted file's space in use.
      if (!file.closed) {
        const closed = once(file, 'close').catch(() => undefined);
        file.destroy();
        await closed;
      }
    }

    const sha256 = hash.digest('hex');
    const key = `${OWN_SNAPSHOT_PREFIX}${sha256}.${gzip ? 'tar.gz' : 'tar'}`;
    // Before the HEAD, as always: a store that is down fails here once, not after a HEAD's deadline too.
    await this.objects.ensureBucket();
    // Any failure to look is "not there": the PUT then says what is wrong with the store.
    const stored = await this.objects.size(key).catch(() => undefined);
    if (stored !== bytes) {
      const stream = createReadStream(path);
      try {
        await this.objects.put(key, { stream, length: bytes }, gzip ? 'application/gzip' : 'application/x-tar', {
          // The directory name the CLI uploaded: with the caller, the source identity of the build layer cache.
          metadata: name ? { 'upload-name': encodeURIComponent(name) } : undefined,
        });
      } finally {
        // Unread when the PUT failed early: its descriptor would keep the temp file's space in use.
        stream.destroy();
      }
    }
    this.log.info({ key, bytes, name }, 'snapshot uploaded');
    return { snapshot: key, size: String(bytes), sha256 };
  }
}

function tooLarge(max: number, detail?: string): UploadTooLarge {
  return new UploadTooLarge(
    max,
    `upload is larger than the server's limit of ${formatBytes(max)} (IMGBUILDER_MAX_UPLOAD_BYTES${detail ? `; ${detail}` : ''}); shrink the context with .dockerignore`,
  );
}

/** A temp-file write failed: a full disk is the server's resource running out, not a bug. */
function diskError(err: NodeJS.ErrnoException): Error {
  if (err.code === 'ENOSPC' || err.code === 'EDQUOT') return new StorageFull('the server ran out of disk space for uploads; retry later');
  return err;
}

function toUploadError(err: unknown, log: Logger): ServiceError {
  // Storage failures are the operator's to see; the client gets a retryable status without internals.
  if ((err as { $metadata?: unknown }).$metadata !== undefined) {
    log.error({ err }, 'snapshot could not be stored');
    return toServiceError(new StorageUnavailable('the object store did not accept the snapshot; retry later', err), log, 'Upload');
  }
  return toServiceError(err, log, 'Upload');
}

function drained(file: WriteStream): Promise<void> {
  return once(file, 'drain').then(() => undefined);
}

/** Iterates `source` until it ends or `signal` fires (then ends early, without error). */
async function* abortable<T>(source: AsyncIterable<T>, signal: AbortSignal): AsyncGenerator<T> {
  const it = source[Symbol.asyncIterator]();
  const aborted = new Promise<IteratorResult<T>>((resolve) => signal.addEventListener('abort', () => resolve({ done: true, value: undefined }), { once: true }));
  for (;;) {
    const n = await Promise.race([it.next(), aborted]);
    if (n.done) return;
    yield n.value;
  }
}
