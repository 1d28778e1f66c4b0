import type { Stats } from 'node:fs';
import { lstat, readFile, readdir, readlink, realpath } from 'node:fs/promises';
import { dirname, join, posix, relative, resolve, sep } from 'node:path';
import dockerignore from '@balena/dockerignore';
import { ContextLimitExceeded, ContextSymlinkEscape } from './errors.js';

/**
 * What a build context holds, as `docker build` sends it: one walk shared by the CLI (before an upload) and the
 * worker (before a build), so both agree on every file. Rules:
 * - `.dockerignore` as Docker applies it, `!` re-includes too; `.dockerignore` itself and the `keep` paths (the
 *   Dockerfile) are listed even when excluded.
 * - An excluded directory is skipped whole only when no `!` pattern could re-include something under it.
 * - The top-level `.git` directory is skipped.
 * - Regular files and symlinks are listed; symlinks stay links and must not leave the context (an excluded one
 *   may). Sockets, fifos and devices are skipped: a tar of the context cannot carry them.
 * - Names are sorted at each level, so an unchanged directory lists the same way every time.
 */

export interface ContextLimits {
  maxBytes: number;
  maxFiles: number;
}

export interface ContextEntry {
  /** Relative to the context, `/`-separated. */
  path: string;
  stat: Stats;
}

export interface ContextListing {
  entries: ContextEntry[];
  /** Bytes of file data (links count nothing). */
  bytes: number;
}

export interface WalkOptions {
  /** Paths (relative, `/`-separated) listed even when .dockerignore excludes them. */
  keep?: readonly string[];
  /** Caps checked while walking: the walk stops at the first entry past one. */
  limits?: ContextLimits;
}

/** Lists the context at `dir` (absolute); see the rules above. */
export async function walkContext(dir: string, options: WalkOptions = {}): Promise<ContextListing> {
  const realDir = await realpath(dir);
  const ignoreText = await readDockerignore(realDir);
  const ig = dockerignore({ ignorecase: false }).add(ignoreText);
  const reincludes = negatedPatterns(ignoreText);
  const keep = new Set(['.dockerignore', ...(options.keep ?? [])]);
  const within = (target: string) => [dir, realDir].some((base) => target === base || target.startsWith(base + sep));
  const listing: ContextListing = { entries: [], bytes: 0 };
  const walk = async (abs: string): Promise<void> => {
    for (const name of (await readdir(abs)).sort()) {
      const child = join(abs, name);
      const rel = relative(realDir, child).split(sep).join('/');
      const st = await lstat(child);
      if (st.isDirectory()) {
        if (rel === '.git') continue;
        const holdsKept = [...keep].some((k) => k.startsWith(`${rel}/`));
        if (!holdsKept && ig.ignores(rel) && !reincludes.some((p) => mayReinclude(p, rel))) continue;
        await walk(child);
        continue;
      }
      const ignored = !keep.has(rel) && ig.ignores(rel);
      if (st.isSymbolicLink()) {
        const link = await readlink(child);
        if (!within(resolve(dirname(child), link))) {
          if (ignored) continue;
          throw new ContextSymlinkEscape(rel, link, `symlink ${rel} points outside the build context (${link})`);
        }
      } else if (!st.isFile()) continue;
      if (ignored) continue;
      listing.entries.push({ path: rel, stat: st });
      if (st.isFile()) listing.bytes += st.size;
      const limits = options.limits;
      if (limits && listing.entries.length > limits.maxFiles) throw new ContextLimitExceeded('files', limits.maxFiles);
      if (limits && listing.bytes > limits.maxBytes) throw new ContextLimitExceeded('bytes', limits.maxBytes);
    }
  };
  await walk(realDir);
  return listing;
}

/** `.dockerignore` of the context; a symlink is followed only while it stays inside the context. */
async function readDockerignore(realDir: string): Promise<string> {
  const path = join(realDir, '.dockerignore');
  const real = await realpath(path).catch(() => undefined);
  if (!real) return '';
  if (!real.startsWith(realDir + sep)) {
    const link = await readlink(path).catch(() => '');
    throw new ContextSymlinkEscape('.dockerignore', link, '.dockerignore is a symlink pointing outside the build context');
  }
  return readFile(real, 'utf8');
}

/** The `!` patterns of a .dockerignore, cleaned as Docker cleans them, split into path parts. */
function negatedPatterns(text: string): string[][] {
  const out: string[][] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line.startsWith('!')) continue;
    const pattern = posix.normalize(line.slice(1).trim()).replace(/^\/+/, '').replace(/\/+$/, '');
    if (pattern && pattern !== '.') out.push(pattern.split('/'));
  }
  return out;
}

/**
 * Whether a `!` pattern could match `dir` or something under it (Docker matches a pattern against a path's parents
 * too). Conservative: only a literal part that differs from the directory's part at the same depth rules it out.
 */
function mayReinclude(pattern: string[], dir: string): boolean {
  const parts = dir.split('/');
  for (let i = 0; i < parts.length && i < pattern.length; i++) {
    const p = pattern[i];
    if (p === '**') return true;
    if (/[*?[\\]/.test(p)) continue;
    if (p !== parts[i]) return false;
  }
  return true;
}
