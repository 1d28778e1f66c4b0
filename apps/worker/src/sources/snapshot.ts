import { dirname, join, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import * as tar from 'tar-fs';
import { httpStatus } from '@imgbuilder/common/object-store';
import { checkSnapshotSource, hasGitPart } from '@imgbuilder/common/source-policy';
import { overBudget, type InitializerContext, type RunState } from './initializer-context.js';
import { asSource, SourceError } from '../errors.js';

/** A tar, optionally gzip-compressed, extracted into the context within the size and file caps. */
export async function restoreSnapshot(name: string, fromVolume: boolean, ctx: InitializerContext, state: RunState, prebuild: boolean): Promise<void> {
  if (fromVolume) throw new SourceError(`snapshot ${name} is a volume snapshot; imgbuilder restores object-storage snapshots only`);
  // The API refused names outside the policy; checked again here, since the job is what the worker acts on.
  const { bucket, key } = asSource(() => checkSnapshotSource(name, { ownBucket: ctx.objects.bucket, sources: ctx.snapshotSources ?? [] }));
  ctx.log(`restoring snapshot ${name}`);
  let body: Readable;
  try {
    body = await ctx.objects.getStream(key, bucket);
  } catch (err) {
    const e = err as Error;
    const missing = e.name === 'NoSuchKey' || httpStatus(err) === 404;
    throw new SourceError(`snapshot ${name} cannot be read: ${missing ? 'not found' : e.message}`, !missing);
  }
  const head = await peek(body).catch((err: Error) => {
    throw new SourceError(`snapshot ${name} cannot be read: ${err.message}`);
  });
  const gz = head[0] === 0x1f && head[1] === 0x8b;
  const root = ctx.root;
  let limit: string | undefined;
  const budgetError = () => new SourceError(`snapshot ${name}: ${limit}`);
  // Once refused, the rest of the archive is skipped without writing anything, and the source is stopped.
  const stop = () => process.nextTick(() => body.destroy(budgetError()));
  const extract = tar.extract(root, {
    ignore: (_name, header) => {
      const h = header as { type?: string; name: string; linkname?: string } | undefined;
      if (!h) return false;
      if (limit) return true;
      // Directories count too: a small gzip of millions of empty directories would exhaust inodes.
      if (h.type === 'file' || h.type === 'link' || h.type === 'symlink' || h.type === 'directory') state.files++;
      // Only a prebuild's working copies may hold git metadata; runInitializer sanitises those before git runs.
      if (!prebuild && hasGitPart(h.name)) limit = `it holds ${h.name.slice(0, 200)}: a .git path part is refused outside prebuild snapshots; git metadata may only come from a git initializer`;
      limit ??= overBudget(ctx, state);
      if (limit) {
        stop();
        return true;
      }
      // Links must stay inside the context; outside ones are dropped (the context check would refuse them).
      if (h.type === 'symlink' && h.linkname) {
        const target = resolve(dirname(join(root, h.name)), h.linkname);
        return target !== root && !target.startsWith(root + sep);
      }
      return false;
    },
    // Caps are enforced on file data as it is written: the first file past a cap fails the extraction, so a
    // decompression bomb stops there instead of filling the disk. (Failing inside `ignore` would leave tar-stream
    // an entry stream without an error listener, which takes the process down.)
    mapStream: ((fileStream: Readable) => {
      const counter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          state.bytes += chunk.length;
          limit ??= overBudget(ctx, state);
          cb(limit ? budgetError() : null, chunk);
        },
      });
      fileStream.on('error', () => undefined);
      if (limit) process.nextTick(() => counter.destroy(budgetError()));
      return fileStream.pipe(counter);
    }) as never,
    dmode: 0o755,
    fmode: 0o644,
  });
  try {
    if (gz) await pipeline(body, createGunzip(), extract);
    else await pipeline(body, extract);
  } catch (err) {
    if (limit) throw budgetError();
    throw new SourceError(`snapshot ${name} is not a valid tar archive: ${(err as Error).message}`);
  }
  if (limit) throw budgetError();
}

/** The first bytes of a stream (to tell gzip from tar), put back so the stream reads whole. */
async function peek(stream: Readable): Promise<Buffer> {
  for (;;) {
    const chunk = stream.read() as Buffer | null;
    if (chunk !== null) {
      stream.unshift(chunk);
      return chunk;
    }
    if (stream.readableEnded) return Buffer.alloc(0);
    await new Promise<void>((resolve, reject) => {
      const done = () => {
        stream.off('readable', done).off('end', done).off('error', fail);
        resolve();
      };
      const fail = (err: Error) => {
        stream.off('readable', done).off('end', done);
        reject(err);
      };
      stream.once('readable', done).once('end', done).once('error', fail);
    });
  }
}
