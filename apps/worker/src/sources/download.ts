import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { hasGitPart, parseSourceUrl } from '@imgbuilder/common/source-policy';
import { asWriteError, inside, openInside } from './context-fs.js';
import { httpGet } from './http-get.js';
import { overBudget, type InitializerContext, type RunState } from './initializer-context.js';
import { SourceError } from '../errors.js';

/** A download initializer: each file fetched into target_location and checked against its digest. */
export async function download(files: { url: string; filePath: string; digest: string }[], target: string, ctx: InitializerContext, state: RunState): Promise<void> {
  const base = inside(ctx.root, target, 'download target_location');
  for (const listed of files) {
    // The job carries URLs sealed (they often hold tokens); the source's own URL is the fallback for older jobs.
    const sealedUrl = ctx.downloadUrls?.[state.download++];
    const f = { ...listed, url: sealedUrl || listed.url };
    const dest = inside(base, f.filePath, 'download file_path');
    if (hasGitPart(target) || hasGitPart(f.filePath)) throw new SourceError(`download of ${f.filePath}: a .git path part is refused; git metadata may only come from a git initializer`);
    ctx.log(`downloading ${f.filePath}`);
    const out = await openInside(ctx.root, dest, `download of ${f.filePath}`).catch((err: unknown) => {
      throw asWriteError(err);
    });
    const body = await openDownload(f, ctx).catch(async (err: unknown) => {
      await out.close();
      throw err;
    });
    const hash = createHash('sha256');
    state.files++;
    let limit: string | undefined;
    try {
      await pipeline(
        body,
        new Transform({
          transform(chunk: Buffer, _enc, cb) {
            hash.update(chunk);
            state.bytes += chunk.length;
            limit = overBudget(ctx, state);
            cb(limit ? new SourceError(limit) : null, chunk);
          },
        }),
        out.createWriteStream(),
      );
    } catch (err) {
      if (limit) throw new SourceError(limit);
      throw new SourceError(`download of ${f.filePath} failed: ${(err as Error).message}`);
    }
    const got = `sha256:${hash.digest('hex')}`;
    if (got !== f.digest) throw new SourceError(`download of ${f.filePath}: digest mismatch (expected ${f.digest}, got ${got})`);
  }
}

async function openDownload(f: { url: string; filePath: string }, ctx: InitializerContext): Promise<Readable> {
  if (ctx.allowLocal && parseSourceUrl(f.url).kind === 'local') {
    const path = /^file:/i.test(f.url) ? fileURLToPath(f.url) : f.url;
    const stream = createReadStream(path);
    await new Promise<void>((ok, fail) => stream.once('open', () => ok()).once('error', (err: NodeJS.ErrnoException) => fail(new SourceError(`download of ${f.filePath} failed: ${err.code ?? err.message}`))));
    return stream;
  }
  // Messages name the file, never the URL: download URLs often carry tokens (presigned URLs).
  const res = await httpGet(f.url, `download of ${f.filePath}`, ctx.signal, 10 * 60_000).catch((err: Error) => {
    throw err instanceof SourceError ? err : new SourceError(`download of ${f.filePath} failed: ${err.message}`);
  });
  if (res.statusCode !== 200) {
    res.resume();
    throw new SourceError(`download of ${f.filePath} failed: HTTP ${res.statusCode}`);
  }
  return res;
}
