import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { GeneratedFile } from '../build-context.js';
import { httpGet } from '../sources/http-get.js';
import { SourceError } from '../errors.js';
import type { Instruction } from './dockerfile-parse.js';
import { flagText, pathArgs, safeExpand, type Lookup } from './dockerfile-words.js';

// ADD's sources, which the engine would fetch on its own: which words are URLs, and fetching the http(s) ones here,
// through the fetch policy, into the context (dockerfile-rewrite.ts turns their ADD into a COPY).

/** Where fetched ADD files sit in the context sent to the engine. */
export const ADD_DIR = '.imgbuilder-add';

type AddSource = { kind: 'local' } | { kind: 'http'; url: string } | { kind: 'refused'; why: string };

/** Could text that continues with an unknown value still become a URL or an scp-like git address? */
function couldBeRemote(prefix: string): boolean {
  return /^[A-Za-z0-9+._-]*(@[A-Za-z0-9._-]*)?(:.*)?$/s.test(prefix);
}

/** What the engine would make of one ADD source: a file of the context, a URL it fetches, or a refused source. */
export function classifyAddSource(word: string, escape: string, lookup: Lookup): AddSource {
  if (/^\d*<<-?[^<]+$/.test(word)) return { kind: 'local' };
  const e = safeExpand(word, escape, lookup);
  if (!e || e.unknownAt !== undefined) {
    const prefix = e ? e.value.slice(0, e.unknownAt) : word;
    if (!couldBeRemote(prefix)) return { kind: 'local' };
    return { kind: 'refused', why: 'names a variable whose value is not known before the build (a base image\'s ENV or an ARG without a default), so it could be a URL the engine would fetch on its own; write the URL out or give the ARG a default' };
  }
  const v = e.value;
  if (/^https?:\/\//.test(v)) {
    let url: URL;
    try {
      url = new URL(v);
    } catch {
      return { kind: 'refused', why: 'is not a valid URL' };
    }
    if (url.pathname.endsWith('.git')) return { kind: 'refused', why: 'is a git repository; ADD of git sources is refused (use a git initializer in the build source)' };
    return { kind: 'http', url: v };
  }
  if (/^[A-Za-z0-9+.-]+:\/\//.test(v) || /^[A-Za-z0-9_-]+@[A-Za-z0-9.-]+:/.test(v)) {
    return { kind: 'refused', why: 'is a remote source other than an http(s) URL; only http and https URLs are fetched for ADD (git sources: use a git initializer)' };
  }
  return { kind: 'local' };
}

/** Safe as a file name in a COPY line in every engine: no quoting, globbing, variables or escapes. */
const PLAIN_NAME = /^[A-Za-z0-9_+=,~@-][A-Za-z0-9._+=,~@-]*$/;

/**
 * The replacement of one ADD with http(s) sources: those fetched, copied from the context by a COPY with the same
 * flags and destination; the local sources stay in an ADD of their own (they may be archives to unpack).
 */
export async function rewriteAdd(
  ins: Instruction,
  escape: string,
  lookup: Lookup,
  files: GeneratedFile[],
  fetch: (url: string, name: string) => Promise<{ sha256: string }>,
): Promise<string | undefined> {
  const { words, json } = pathArgs(ins.rest);
  if (words.length < 2) return undefined;
  const dest = words[words.length - 1];
  const sources = words.slice(0, -1).map((w) => ({ word: w, what: classifyAddSource(w, escape, lookup) }));
  const at = (w: string) => `ADD ${w} (Dockerfile line ${ins.startLine + 1})`;
  for (const s of sources) if (s.what.kind === 'refused') throw new SourceError(`${at(s.word)} ${s.what.why}`);
  const remote = sources.filter((s) => s.what.kind === 'http');
  if (!remote.length) return undefined;
  if (ins.heredocs.length) throw new SourceError(`${at(remote[0].word)}: URLs and here-documents in one ADD are not supported here; split the instruction`);
  const destValue = safeExpand(dest, escape, lookup);
  const intoDir = (destValue?.value ?? dest).endsWith('/');
  if (sources.length > 1 && !intoDir) throw new SourceError(`${at(remote[0].word)}: when using ADD with more than one source file, the destination must be a directory and end with a /`);
  const checksum = ins.flags.filter((f) => f.startsWith('--checksum=')).pop()?.slice('--checksum='.length);
  const names: string[] = [];
  for (const s of remote) {
    const url = (s.what as { url: string }).url;
    const base = decodeURIComponent(new URL(url).pathname).split('/').pop() || '__unnamed__';
    if (intoDir && !PLAIN_NAME.test(base)) throw new SourceError(`${at(displayUrl(url))}: the URL's file name ${JSON.stringify(base)} cannot be passed on safely; give the destination a file name`);
    const name = `${ADD_DIR}/${files.length}/${intoDir ? base : 'file'}`;
    const got = await fetch(url, name);
    if (checksum && checksum !== `sha256:${got.sha256}`) throw new SourceError(`${at(displayUrl(url))}: checksum mismatch (expected ${checksum}, got sha256:${got.sha256})`);
    names.push(name);
  }
  const form = (flags: string[], paths: string[]) => `${flags.map(flagText).join(' ')}${flags.length ? ' ' : ''}${json ? JSON.stringify([...paths, dest]) : [...paths, dest].join(' ')}`;
  const copyFlags = ins.flags.filter((f) => !f.startsWith('--checksum=') && !f.startsWith('--keep-git-dir'));
  const local = sources.filter((s) => s.what.kind === 'local').map((s) => s.word);
  return [...(local.length ? [`ADD ${form(ins.flags, local)}`] : []), `COPY ${form(copyFlags, names)}`].join('\n');
}

/** A URL for messages and logs: no credentials, no query (tokens live there). */
export function displayUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(invalid URL)';
  }
}

/** Streams an HTTP answer into a file, at most `maxBytes`, hashing it on the way. */
export async function saveBody(body: NodeJS.ReadableStream, file: string, maxBytes: number, what: string): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  await pipeline(
    body,
    new Transform({
      transform(chunk: Buffer, _enc, cb) {
        bytes += chunk.length;
        hash.update(chunk);
        cb(bytes > maxBytes ? new SourceError(`${what}: the fetched files would make the build context larger than IMGBUILDER_MAX_CONTEXT_BYTES`) : null, chunk);
      },
    }),
    createWriteStream(file, { mode: 0o600 }),
  );
  return { sha256: hash.digest('hex'), bytes };
}

/** Fetches an `ADD <url>` source through the fetch policy (every hop checked, see httpGet) into `file`. */
export async function fetchAddSource(url: string, file: string, maxBytes: number, signal: AbortSignal): Promise<{ sha256: string; bytes: number; mtime?: Date }> {
  const what = `ADD ${displayUrl(url)}`;
  const res = await httpGet(url, what, signal, ADD_FETCH_TIMEOUT_MS).catch((err: Error) => {
    throw err instanceof SourceError ? err : new SourceError(`${what} failed: ${err.message}`);
  });
  if (res.statusCode !== 200) {
    res.resume();
    throw new SourceError(`${what} failed: HTTP ${res.statusCode}`);
  }
  const modified = res.headers['last-modified'] ? new Date(res.headers['last-modified']) : undefined;
  const saved = await saveBody(res, file, maxBytes, what).catch((err: Error) => {
    throw err instanceof SourceError ? err : new SourceError(`${what} failed: ${err.message}`);
  });
  return { ...saved, ...(modified && !Number.isNaN(modified.getTime()) ? { mtime: modified } : {}) };
}

/** As long as a download initializer's file may take. */
const ADD_FETCH_TIMEOUT_MS = 10 * 60_000;
