import { lstat, readFile, realpath, stat } from 'node:fs/promises';
import { dirname, relative, sep } from 'node:path';
import type { Readable } from 'node:stream';
import * as tar from 'tar-fs';
import { ContextLimitExceeded, ContextSymlinkEscape, walkContext, type ContextLimits } from '@imgbuilder/common/context-walker';
import { inside } from './sources/context-fs.js';
import { SourceError, contextLimitMessage } from './sources/source-error.js';

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

  const { entries: listed, bytes } = await walkContext(realContext, { limits }).catch((err: unknown) => {
    throw asSourceError(err);
  });
  const entries = listed.map((e) => e.path);

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
              pack.entry({ name: EXTRA_DOCKERFILE, mode: 0o644 }, dockerfileText);
              pack.finalize();
            }
          : undefined,
      }),
  };
}

/** The walker's refusals in the worker's words. */
function asSourceError(err: unknown): unknown {
  if (err instanceof ContextSymlinkEscape) return new SourceError(err.message);
  if (err instanceof ContextLimitExceeded) return new SourceError(contextLimitMessage(err));
  return err;
}
