import { createReadStream, type Stats } from 'node:fs';
import { lstat, readlink } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { createGzip } from 'node:zlib';
import * as tarStream from 'tar-stream';
import { walkContext } from '@imgbuilder/common/context-walker';
import { ContextSymlinkEscape } from '@imgbuilder/common/errors';
import { usageError } from './cli-error.js';

/** Where a Dockerfile outside the directory goes in the archive (the directory's files then go under `context/`). */
const OUTSIDE_DOCKERFILE = 'Dockerfile';
const OUTSIDE_CONTEXT = 'context';

interface ArchiveEntry {
  abs: string;
  /** Name inside the archive. */
  name: string;
  stat: Stats;
}

/** What `build DIR` uploads and how the Build request names its parts. */
export interface ContextPlan {
  entries: ArchiveEntry[];
  files: number;
  bytes: number;
  /** `dockerfile_path` and `context_path` of the snapshot source, relative to the archive's root. */
  dockerfilePath: string;
  contextPath: string;
}

/**
 * Lists what a local build sends, as `docker build DIR` would, through the walk the worker uses too (context-walker:
 * `.dockerignore` applies, the Dockerfile and `.dockerignore` are always sent, `.git` is skipped, symlinks stay links
 * and must not leave DIR). `dockerfile` is relative to DIR (or absolute); outside DIR it is added to the archive
 * beside a `context/` directory holding DIR.
 */
export async function planContext(dir: string, dockerfile = 'Dockerfile'): Promise<ContextPlan> {
  const root = resolve(dir);
  const rootStat = await lstat(root).catch(() => undefined);
  if (!rootStat?.isDirectory()) throw usageError(`${dir} is not a directory`);
  const dfAbs = isAbsolute(dockerfile) ? dockerfile : resolve(root, dockerfile);
  const dfStat = await lstat(dfAbs).catch(() => undefined);
  if (!dfStat) throw usageError(`Dockerfile not found: ${dfAbs}`);
  const dfRel = relative(root, dfAbs).split(sep).join('/');
  const outside = dfRel === '' || dfRel.startsWith('../') || isAbsolute(dfRel);
  const prefix = outside ? `${OUTSIDE_CONTEXT}/` : '';

  const listing = await walkContext(root, { keep: outside ? [] : [dfRel] }).catch((err: unknown) => {
    if (err instanceof ContextSymlinkEscape) throw usageError(`symlink ${err.path} points outside ${dir} (${err.link}); add it to .dockerignore`);
    throw err;
  });
  const entries: ArchiveEntry[] = listing.entries.map((e) => ({ abs: join(root, e.path), name: prefix + e.path, stat: e.stat }));
  let bytes = listing.bytes;
  if (outside) {
    if (!dfStat.isFile()) throw usageError(`${dfAbs} is not a file`);
    entries.unshift({ abs: dfAbs, name: OUTSIDE_DOCKERFILE, stat: dfStat });
    bytes += dfStat.size;
  } else if (!dfStat.isFile() && !dfStat.isSymbolicLink()) throw usageError(`${dfAbs} is not a file`);
  return {
    entries,
    files: entries.length,
    bytes,
    dockerfilePath: outside ? OUTSIDE_DOCKERFILE : dfRel,
    // Explicit: an empty context_path would mean "the Dockerfile's directory".
    contextPath: outside ? OUTSIDE_CONTEXT : '.',
  };
}

/**
 * The planned files as a gzip-compressed tar stream, produced as it is read. Owners are zeroed (as Docker's CLI
 * does) and names sorted, so an unchanged directory yields the same bytes, hence the same snapshot key and ref.
 */
export function archiveStream(plan: ContextPlan): Readable {
  const pack = tarStream.pack();
  const gzip = createGzip();
  let stopped = false;
  const fill = async () => {
    for (const e of plan.entries) {
      if (stopped) return;
      const header: Parameters<tarStream.Pack['entry']>[0] = {
        name: e.name,
        mode: e.stat.mode & 0o7777,
        mtime: e.stat.mtime,
        uid: 0,
        gid: 0,
        uname: '',
        gname: '',
      };
      if (e.stat.isSymbolicLink()) {
        pack.entry({ ...header, type: 'symlink', linkname: await readlink(e.abs), size: 0 });
        continue;
      }
      await new Promise<void>((resolveEntry, rejectEntry) => {
        const fail = (err: NodeJS.ErrnoException) => rejectEntry(new Error(`cannot pack ${e.abs}: ${/size|premature/i.test(err.message) ? 'it changed while being packed' : (err.code ?? err.message)}`));
        const entry = pack.entry({ ...header, type: 'file', size: e.stat.size }, (err) => (err ? fail(err) : resolveEntry()));
        entry.on('error', fail);
        createReadStream(e.abs).on('error', fail).pipe(entry as unknown as NodeJS.WritableStream);
      });
    }
    pack.finalize();
  };
  // The consumer gone (upload refused or interrupted): stop reading files.
  gzip.on('close', () => {
    stopped = true;
    pack.destroy();
  });
  fill().catch((err: Error) => gzip.destroy(err));
  pack.on('error', (err) => gzip.destroy(err));
  pack.pipe(gzip);
  return gzip;
}
