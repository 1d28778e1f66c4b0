import { createReadStream, type Stats } from 'node:fs';
import { lstat, readdir, readFile, readlink, realpath } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { createGzip } from 'node:zlib';
import * as tarStream from 'tar-stream';
import dockerignore from '@balena/dockerignore';
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
 * Lists what a local build sends, as `docker build DIR` would: DIR's files minus those its `.dockerignore` excludes
 * (the Dockerfile and `.dockerignore` are always sent), `.git` skipped as the worker would skip it anyway. Symlinks
 * stay links and must not leave DIR. `dockerfile` is relative to DIR (or absolute); outside DIR it is added to the
 * archive beside a `context/` directory holding DIR.
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

  const realRoot = await realpath(root);
  const ignoreText = await readFile(join(root, '.dockerignore'), 'utf8').catch(() => '');
  const ig = dockerignore({ ignorecase: false }).add(ignoreText);
  const negations = /^\s*!/m.test(ignoreText);
  const entries: ArchiveEntry[] = [];
  let bytes = 0;
  const walk = async (abs: string): Promise<void> => {
    for (const name of (await readdir(abs)).sort()) {
      const child = join(abs, name);
      const rel = relative(root, child).split(sep).join('/');
      const st = await lstat(child);
      if (rel === '.git' && st.isDirectory()) continue;
      if (st.isDirectory()) {
        // An ignored directory is skipped whole (node_modules!) unless a negated pattern may keep a child.
        if (!negations && ig.ignores(rel) && (outside || !dfRel.startsWith(`${rel}/`))) continue;
        await walk(child);
        continue;
      }
      const alwaysSent = rel === '.dockerignore' || (!outside && rel === dfRel);
      if (!alwaysSent && ig.ignores(rel)) continue;
      if (st.isSymbolicLink()) {
        const link = await readlink(child);
        const target = resolve(dirname(child), link);
        if (target !== root && target !== realRoot && !target.startsWith(root + sep) && !target.startsWith(realRoot + sep)) {
          throw usageError(`symlink ${rel} points outside ${dir} (${link}); add it to .dockerignore`);
        }
      } else if (!st.isFile()) continue;
      entries.push({ abs: child, name: prefix + rel, stat: st });
      bytes += st.isFile() ? st.size : 0;
    }
  };
  await walk(root);
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
