import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { SourceRefused } from '@imgbuilder/common/errors';
import { checkRegistryHost } from '@imgbuilder/common/fetch-policy';
import { parseImageRef, registryHost } from '@imgbuilder/common/image-ref';
import type { GeneratedFile } from '../build-context.js';
import { httpGet } from '../sources/http-get.js';
import { SourceError } from '../sources/source-error.js';
import { imageUsesOf, type ImageUse } from './dockerfile-bases.js';
import { checkFrontends } from './dockerfile-frontends.js';
import {
  DockerfileSyntaxError,
  extractFlags,
  goLower,
  flagText,
  mountFields,
  mountText,
  parseDockerfile,
  pathArgs,
  safeExpand,
  scopeInstructions,
  type Instruction,
  type Lookup,
  type ParsedDockerfile,
} from './dockerfile-parse.js';

/** Where fetched ADD files sit in the context sent to the engine. */
export const ADD_DIR = '.imgbuilder-add';

export interface DockerfileRewrite {
  /** The Dockerfile the engine gets. */
  text: string;
  files: GeneratedFile[];
  changed: boolean;
}

/** What the rewrite needs from the build: the policies, the caller and where fetched files go. */
export interface RewriteOptions {
  /** IMGBUILDER_ALLOWED_FRONTENDS. */
  frontends: readonly string[];
  /** Throws a SourceError when the fetch policy refuses the registry host an image would be pulled from. */
  checkRegistry: (host: string, image: string) => Promise<void>;
  /** The ONBUILD triggers of a base image (none when the engine will report the image missing or denied). */
  baseTriggers: (image: string) => Promise<string[]>;
  /** Fetches an http(s) URL through the fetch policy into `file`, at most `maxBytes`. */
  fetch: (url: string, file: string, maxBytes: number) => Promise<{ sha256: string; bytes: number; mtime?: Date }>;
  /** Prefix of every cache mount id: the caller's key (see cacheNamespace). */
  cacheNamespace: string;
  /** A directory of the build's own for fetched files. */
  dir: string;
  /** Bytes all fetched files may take together (what the context cap leaves). */
  maxBytes: number;
  log: (line: string) => void;
}

/**
 * Makes a Dockerfile safe to hand to a shared engine, which would otherwise fetch on its own and share state between
 * callers:
 * - a `# syntax=` frontend outside the allow list is refused before anything is pulled;
 * - the registry of every image the build pulls (FROM, COPY --from, RUN --mount from) must pass the fetch policy;
 * - each `ADD <http(s) url>` is fetched here, through the fetch policy, and becomes a COPY of the fetched file from
 *   the context (URL sources are never unpacked, and the file keeps ADD's mode 0600); other remote sources (git, a
 *   variable that may hold a URL) are refused;
 * - every `RUN --mount=type=cache` id gets the caller's prefix, so callers never share a cache mount.
 * The result is read again, with and without here-documents (engine 20.10 and the classic builder do not know them),
 * and refused if any reading still holds an ADD the engine would fetch or a cache mount without the prefix.
 */
export async function rewriteDockerfile(text: string, opts: RewriteOptions): Promise<DockerfileRewrite> {
  checkFrontends(text, opts.frontends);
  const readings = readBothWays(text);
  await checkRegistries(readings, opts.checkRegistry);
  await checkBaseTriggers(readings, opts.baseTriggers);
  const [parsed] = readings;
  const { items } = scopeInstructions(parsed);
  const replaced = new Map<number, { endLine: number; text: string }>();
  const files: GeneratedFile[] = [];
  let budget = opts.maxBytes;
  for (const { instruction: ins, lookup } of items) {
    if (ins.keyword === 'ADD') {
      const out = await rewriteAdd(ins, parsed.escape, lookup, files, async (url, name) => {
        const path = `${opts.dir}/${files.length}`;
        const got = await opts.fetch(url, path, budget);
        budget -= got.bytes;
        opts.log(`ADD ${displayUrl(url)}: fetched by the worker (${got.bytes} bytes), copied from the build context`);
        files.push({ name, path, mtime: got.mtime });
        return got;
      });
      if (out) replaced.set(ins.startLine, { endLine: ins.endLine, text: out });
    } else if (ins.keyword === 'RUN') {
      const flags = ins.flags.map((f) => (f.startsWith('--mount=') ? namespacedMount(f, opts.cacheNamespace) : f));
      if (flags.some((f, i) => f !== ins.flags[i])) replaced.set(ins.startLine, { endLine: ins.endLine, text: `RUN ${flags.map(flagText).join(' ')} ${ins.rest}` });
    }
  }
  if (!replaced.size) {
    verify(readings, opts.cacheNamespace);
    return { text, files, changed: false };
  }
  const lines = [...parsed.lines];
  for (const [start, r] of replaced) {
    lines[start] = r.text;
    // Blank lines keep the line numbers of the engine's messages.
    for (let i = start + 1; i <= r.endLine; i++) lines[i] = '';
  }
  const rewritten = lines.join('\n');
  verify(readBothWays(rewritten), opts.cacheNamespace);
  return { text: rewritten, files, changed: true };
}

/** The cache-mount prefix of a caller: the job's attributed triggered_by (`<token>/<triggered_by>` with tokens). */
export function cacheNamespace(caller: string): string {
  return `imgb${createHash('sha256').update(caller).digest('hex').slice(0, 16)}`;
}

/** The Dockerfile with and without here-documents: different engines read it these two ways. */
function readBothWays(text: string): [ParsedDockerfile, ParsedDockerfile] {
  try {
    return [parseDockerfile(text, { heredocs: true }), parseDockerfile(text, { heredocs: false })];
  } catch (err) {
    if (err instanceof DockerfileSyntaxError) throw new SourceError(`Dockerfile: ${err.message}`);
    throw err;
  }
}

async function checkRegistries(readings: ParsedDockerfile[], check: RewriteOptions['checkRegistry']): Promise<void> {
  const seen = new Set<string>();
  for (const use of readings.flatMap(imageUsesOf)) {
    const host = hostOf(use);
    if (seen.has(`${host} ${use.image}`)) continue;
    seen.add(`${host} ${use.image}`);
    await check(host, use.image);
  }
}

/**
 * Refuses a base image whose ONBUILD triggers would make the engine fetch on its own (an ADD of a URL, or of a
 * variable that may hold one): the engine runs them first thing in any build FROM that image.
 */
async function checkBaseTriggers(readings: ParsedDockerfile[], triggersOf: RewriteOptions['baseTriggers']): Promise<void> {
  const seen = new Set<string>();
  for (const use of readings.flatMap(imageUsesOf)) {
    if (use.where !== 'FROM' || use.unknownAt !== undefined || seen.has(use.image)) continue;
    seen.add(use.image);
    for (const trigger of await triggersOf(use.image)) {
      let parsed: ParsedDockerfile;
      try {
        parsed = parseDockerfile(trigger, { heredocs: false });
      } catch {
        continue; // The engine cannot parse it either.
      }
      for (const ins of parsed.instructions.filter((i) => i.keyword === 'ADD')) {
        const remote = pathArgs(ins.rest).words.slice(0, -1).find((w) => classifyAddSource(w, parsed.escape, () => undefined).kind !== 'local');
        if (remote) throw new SourceError(`FROM ${use.word} (Dockerfile line ${use.line + 1}): the image carries the trigger "ONBUILD ${trigger}", which would make the engine fetch ${remote} on its own; refused`);
      }
    }
  }
}

/**
 * The registry host an image is pulled from; refused when a variable the worker cannot know decides it. A name that
 * does not parse (a `from . import x` line of a here-document, read as FROM by engines without here-documents) is
 * judged by its first part, as Docker splits names.
 */
function hostOf(use: ImageUse): string {
  let text = use.image;
  if (use.unknownAt !== undefined) {
    text = use.image.slice(0, use.unknownAt);
    if (!text.includes('/')) {
      throw new SourceError(`${use.where} ${use.word} (Dockerfile line ${use.line + 1}): the image's registry is named through a variable whose value is not known before the build; write the registry out or give the ARG a default`);
    }
  } else {
    try {
      return registryHost(parseImageRef(use.image).domain);
    } catch {
      // Judged by its first part below.
    }
  }
  const first = text.split('/')[0];
  return registryHost(text.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost') ? first : 'docker.io');
}

type AddSource = { kind: 'local' } | { kind: 'http'; url: string } | { kind: 'refused'; why: string };

/** Could text that continues with an unknown value still become a URL or an scp-like git address? */
function couldBeRemote(prefix: string): boolean {
  return /^[A-Za-z0-9+._-]*(@[A-Za-z0-9._-]*)?(:.*)?$/s.test(prefix);
}

/** What the engine would make of one ADD source: a file of the context, a URL it fetches, or a refused source. */
function classifyAddSource(word: string, escape: string, lookup: Lookup): AddSource {
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
async function rewriteAdd(
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

/** A `--mount=` flag with a cache mount's id (or, without one, its target) prefixed by the caller's namespace. */
function namespacedMount(flag: string, ns: string): string {
  let fields;
  try {
    fields = mountFields(flag.slice('--mount='.length));
  } catch {
    return flag; // The engine refuses it too.
  }
  const last = (...keys: string[]) => fields.filter((f) => keys.includes(f.key)).pop()?.value;
  if (goLower(last('type') ?? 'bind') !== 'cache') return flag;
  const id = last('id') || last('target', 'dst', 'destination');
  if (!id || id.startsWith(`${ns}-`)) return flag;
  return `--mount=${mountText([...fields.filter((f) => f.key !== 'id'), { key: 'id', value: `${ns}-${id}` }])}`;
}

/**
 * Refuses a Dockerfile that, read either way, still makes the engine fetch an ADD source or share a cache mount:
 * an ADD inside a here-document that older engines read as an instruction, an ONBUILD ADD (it runs in later builds
 * the worker never sees), a cache mount the rewrite did not reach.
 */
function verify(readings: ParsedDockerfile[], ns: string): void {
  for (const parsed of readings) {
    for (const { instruction: ins, lookup } of scopeInstructions(parsed).items) {
      const where = `Dockerfile line ${ins.startLine + 1}`;
      if (ins.keyword === 'ONBUILD') {
        const m = /^([^\s\u0085]+)[\s\u0085]*([\s\S]*)$/.exec(ins.rest.trim());
        if (!m || goLower(m[1]) !== 'add') continue;
        // The trigger runs in a later build, with variables and a context the worker never sees.
        for (const word of pathArgs(extractFlags(m[2]).rest).words.slice(0, -1)) {
          if (classifyAddSource(word, parsed.escape, () => undefined).kind !== 'local') throw new SourceError(`ONBUILD ADD ${word} (${where}): later builds FROM this image would make the engine fetch it on its own; refused`);
        }
      } else if (ins.keyword === 'ADD') {
        for (const word of pathArgs(ins.rest).words.slice(0, -1)) {
          if (classifyAddSource(word, parsed.escape, lookup).kind === 'local') continue;
          throw new SourceError(`ADD ${word} (${where}): inside a here-document, which engines without here-document support read as an instruction that fetches it; refused`);
        }
      } else if (ins.keyword === 'RUN') {
        for (const f of ins.flags) {
          if (f.startsWith('--mount=') && namespacedMount(f, ns) !== f) throw new SourceError(`RUN ${f} (${where}): a cache mount inside a here-document, which engines without here-document support read as an instruction; refused`);
        }
      }
    }
  }
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

/** Refuses an image whose registry host the fetch policy refuses (the installation's own registries always pass). */
export async function checkImageRegistry(host: string, image: string): Promise<void> {
  await checkRegistryHost(host, `image ${image}`).catch((err: unknown) => {
    throw err instanceof SourceRefused ? new SourceError(err.message) : err;
  });
}
