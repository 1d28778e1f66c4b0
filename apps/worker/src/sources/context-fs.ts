import { constants } from 'node:fs';
import { lstat, mkdir, open, type FileHandle } from 'node:fs/promises';
import { dirname, relative, resolve, sep } from 'node:path';
import { ContextWriteError, SourceError } from '../errors.js';

/**
 * Writes into the build context that cannot leave it. A path check on strings (`inside()`) is not enough: an
 * earlier initializer may have put a symlink on the way (a checkout holding `out -> /tmp`), and mkdir -p and open()
 * follow it. Here each part of the path is created one at a time and must be a real directory, never a symlink,
 * and files are opened with O_NOFOLLOW. The context belongs to this build alone, so nothing changes it between the
 * check and the write.
 */
/** Creates `dir` (absolute, under `root`) and its missing parents; every existing part must be a directory. */
export async function mkdirInside(root: string, dir: string, what: string): Promise<void> {
  const rel = relative(root, dir);
  if (rel === '') return;
  if (rel.startsWith('..') || rel.startsWith(sep)) throw new ContextWriteError(`${what} points outside the build context`);
  let current = root;
  for (const part of rel.split(sep)) {
    current = `${current}${sep}${part}`;
    const st = await lstat(current).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (!st) {
      await mkdir(current);
      continue;
    }
    if (st.isSymbolicLink()) throw new ContextWriteError(`${what}: ${relative(root, current)} is a symlink; writes through symlinks are refused`);
    if (!st.isDirectory()) throw new ContextWriteError(`${what}: ${relative(root, current)} is not a directory`);
  }
}

/** Opens `file` for writing (created or truncated) without following a symlink at its place; parents via mkdirInside. */
export async function openInside(root: string, file: string, what: string): Promise<FileHandle> {
  const rel = relative(root, file);
  await mkdirInside(root, dirname(file), what);
  try {
    return await open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o644);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new ContextWriteError(`${what}: ${rel} is a symlink; writes through symlinks are refused`);
    if (code === 'EISDIR') throw new ContextWriteError(`${what}: ${rel} is a directory`);
    throw err;
  }
}

/** Resolves a request path inside `base`; refuses escapes. */
export function inside(base: string, rel: string, what: string): string {
  const p = resolve(base, rel || '.');
  if (p !== base && !p.startsWith(base + sep)) throw new SourceError(`${what} "${rel}" points outside the build context`);
  return p;
}

/** A refused context write as the build's failure. */
export function asWriteError(err: unknown): Error {
  return err instanceof ContextWriteError ? new SourceError(err.message) : (err as Error);
}
