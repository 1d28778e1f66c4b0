import { createReadStream } from 'node:fs';
import { lstat, readFile, realpath, stat } from 'node:fs/promises';
import { dirname, relative, sep } from 'node:path';
import type { Readable } from 'node:stream';
import * as tar from 'tar-fs';
import { walkContext, type ContextLimits } from '@imgbuilder/common/context-walker';
import { ContextLimitExceeded, ContextSymlinkEscape } from '@imgbuilder/common/errors';
import { inside } from './sources/context-fs.js';
import { SourceError, contextLimitMessage } from './errors.js';

export interface PreparedContext {
  /** Tar stream of the context, .dockerignore applied. */
  tar: () => Readable;
  /** Dockerfile path inside the tar. */
  dockerfile: string;
  /** The Dockerfile's text. */
  dockerfileText: string;
  files: number;
  bytes: number;
  /**
   * The same context with the Dockerfile replaced (sent beside the original, which `COPY .` still sees) and files
   * the worker made added; nothing in the context's .dockerignore applies to them.
   */
  withGenerated(dockerfileText: string, files: GeneratedFile[]): PreparedContext;
}

/** A file the worker adds to the context (a fetched `ADD <url>` source). */
export interface GeneratedFile {
  /** Path inside the context. */
  name: string;
  /** Where it is on disk. */
  path: string;
  mtime?: Date;
}

type Pack = { entry: (h: object, b?: Buffer | ((err?: Error) => void), cb?: (err?: Error) => void) => NodeJS.WritableStream; finalize: () => void; destroy: (err: Error) => void };

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
  const dockerfileText = (await readFile(realDockerfile)).toString('utf8');
  const make = (dockerfile: string | undefined, text: string, generated: GeneratedFile[]): PreparedContext => ({
    files: entries.length + generated.length,
    bytes,
    dockerfile: dockerfile ?? EXTRA_DOCKERFILE,
    dockerfileText: text,
    withGenerated: (t, g) => make(undefined, t, g),
    tar: () => {
      const extra = dockerfile === undefined || generated.length > 0;
      return (tar.pack as unknown as (dir: string, o: object) => Readable)(realContext, {
        entries,
        dereference: false,
        finalize: !extra,
        finish: extra ? (pack: Pack) => appendEntries(pack, dockerfile === undefined ? text : undefined, generated) : undefined,
      });
    },
  });
  return make(outside ? undefined : dfInContext, dockerfileText, []);
}

/** Appends the private Dockerfile and the generated files (streamed from disk, one after another) to a context tar. */
function appendEntries(pack: Pack, dockerfileText: string | undefined, generated: GeneratedFile[]): void {
  if (dockerfileText !== undefined) pack.entry({ name: EXTRA_DOCKERFILE, mode: 0o644 }, Buffer.from(dockerfileText));
  const next = (i: number): void => {
    if (i === generated.length) return pack.finalize();
    const f = generated[i];
    void stat(f.path).then(
      (st) => {
        // ADD <url> leaves the file with mode 0600 owned by root; the COPY that replaces it keeps the tar's mode.
        const out = pack.entry({ name: f.name, size: st.size, mode: 0o600, mtime: f.mtime ?? new Date(), uid: 0, gid: 0 }, (err) => (err ? pack.destroy(err) : next(i + 1)));
        createReadStream(f.path).on('error', (err) => pack.destroy(err)).pipe(out);
      },
      (err: Error) => pack.destroy(err),
    );
  };
  next(0);
}

/** The walker's refusals in the worker's words. */
function asSourceError(err: unknown): unknown {
  if (err instanceof ContextSymlinkEscape) return new SourceError(err.message);
  if (err instanceof ContextLimitExceeded) return new SourceError(contextLimitMessage(err));
  return err;
}
