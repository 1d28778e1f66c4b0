import { lstat, readFile, readdir, readlink, realpath, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import * as tar from 'tar-fs';
import dockerignore from '@balena/dockerignore';
import { SourceError, inside } from './initializers.js';

export interface ContextLimits {
  maxBytes: number;
  maxFiles: number;
}

export interface PreparedContext {
  /** Tar stream of the context, .dockerignore applied. */
  tar: () => Readable;
  /** Dockerfile path inside the tar. */
  dockerfile: string;
  /** The Dockerfile's text. */
  dockerfileText: string;
  files: number;
  bytes: number;
}

const EXTRA_DOCKERFILE = '.imgbuilder.Dockerfile';

/**
 * Checks the Dockerfile and context paths, walks the context (applying .dockerignore, refusing symlinks that
 * leave it, enforcing size and file-count caps) and returns a tar of it for the engine.
 */
export async function prepareContext(root: string, dockerfilePath: string, contextPath: string, limits: ContextLimits): Promise<PreparedContext> {
  const dfRel = dockerfilePath || 'Dockerfile';
  const dockerfile = inside(root, dfRel, 'dockerfile_path');
  const context = contextPath ? inside(root, contextPath, 'context_path') : dirname(dockerfile);
  const dfStat = await lstat(dockerfile).catch(() => undefined);
  if (!dfStat) throw new SourceError(`Dockerfile not found: ${dfRel} does not exist in the build context`);
  const realRoot = await realpath(root);
  // Any component of the path may be a symlink (`link/Dockerfile` with `link -> /etc`), not only the last one.
  const realDockerfile = await realpath(dockerfile).catch(() => '');
  if (!realDockerfile) throw new SourceError(`Dockerfile not found: ${dfRel} is a dangling symlink`);
  if (!realDockerfile.startsWith(realRoot + sep)) throw new SourceError(`dockerfile_path ${dfRel} points outside the build context through a symlink`);
  if (!(await lstat(realDockerfile)).isFile()) throw new SourceError(`dockerfile_path ${dfRel} is not a file`);
  const ctxStat = await stat(context).catch(() => undefined);
  if (!ctxStat?.isDirectory()) throw new SourceError(`context_path ${contextPath || relative(root, context) || '.'} is not a directory in the build context`);
  const realContext = await realpath(context);
  if (realContext !== realRoot && !realContext.startsWith(realRoot + sep)) throw new SourceError('context_path points outside the build context through a symlink');

  const ignoreText = await readDockerignore(realContext);
  const ig = dockerignore({ ignorecase: false }).add(ignoreText);
  const entries: string[] = [];
  let bytes = 0;
  const walk = async (dir: string): Promise<void> => {
    for (const name of await readdir(dir)) {
      const abs = join(dir, name);
      const rel = relative(realContext, abs).split(sep).join('/');
      const st = await lstat(abs);
      if (rel === '.git' && st.isDirectory()) continue;
      const ignored = ig.ignores(st.isDirectory() ? `${rel}/` : rel) && rel !== '.dockerignore';
      if (st.isSymbolicLink()) {
        const link = await readlink(abs);
        const target = resolve(dirname(abs), link);
        if (target !== realContext && !target.startsWith(realContext + sep)) {
          if (ignored) continue;
          throw new SourceError(`symlink ${rel} points outside the build context (${link})`);
        }
      }
      if (st.isDirectory()) {
        // A directory may be ignored while a negated pattern keeps a child; walk it and filter files.
        // tar-fs would walk a listed directory again, so only files and links are listed.
        await walk(abs);
        continue;
      }
      if (ignored) continue;
      entries.push(rel);
      bytes += st.size;
      if (entries.length > limits.maxFiles) throw new SourceError(`build context has more than ${limits.maxFiles} files (IMGBUILDER_MAX_CONTEXT_FILES)`);
      if (bytes > limits.maxBytes) throw new SourceError(`build context is larger than ${limits.maxBytes} bytes (IMGBUILDER_MAX_CONTEXT_BYTES)`);
    }
  };
  await walk(realContext);

  const dfInContext = relative(realContext, realDockerfile).split(sep).join('/');
  // Outside the context directory, or excluded by .dockerignore (the Docker CLI sends it anyway): added privately.
  const outside = dfInContext.startsWith('../') || !entries.includes(dfInContext);
  const dockerfileText = await readFile(realDockerfile);
  return {
    files: entries.length,
    bytes,
    dockerfile: outside ? EXTRA_DOCKERFILE : dfInContext,
    dockerfileText: dockerfileText.toString('utf8'),
    tar: () =>
      (tar.pack as unknown as (dir: string, o: object) => Readable)(realContext, {
        entries,
        dereference: false,
        finalize: !outside,
        finish: outside
          ? (pack: { entry: (h: object, b: Buffer) => void; finalize: () => void }) => {
              pack.entry({ name: EXTRA_DOCKERFILE, mode: 0o644 }, dockerfileText!);
              pack.finalize();
            }
          : undefined,
      }),
  };
}

/** `.dockerignore` of the context; a symlink is followed only while it stays inside the context. */
async function readDockerignore(realContext: string): Promise<string> {
  const path = join(realContext, '.dockerignore');
  const real = await realpath(path).catch(() => undefined);
  if (!real) return '';
  if (!real.startsWith(realContext + sep)) throw new SourceError('.dockerignore is a symlink pointing outside the build context');
  return readFile(real, 'utf8');
}
