import { createHash } from 'node:crypto';
import { SourceRefused } from '@imgbuilder/common/errors';
import { checkRegistryHost } from '@imgbuilder/common/fetch-policy';
import { parseImageRef, registryHost } from '@imgbuilder/common/image-ref';
import type { GeneratedFile } from '../build-context.js';
import { DockerfileSyntaxError, SourceError } from '../errors.js';
import { imageUsesOf, type ImageUse } from './dockerfile-bases.js';
import { checkFrontends } from './dockerfile-frontends.js';
import { classifyAddSource, displayUrl, rewriteAdd } from './dockerfile-add.js';
import { parseDockerfile, type ParsedDockerfile } from './dockerfile-parse.js';
import { scopeInstructions } from './dockerfile-scopes.js';
import { extractFlags, flagText, goLower, mountFields, mountText, pathArgs } from './dockerfile-words.js';

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

/** Refuses an image whose registry host the fetch policy refuses (the installation's own registries always pass). */
export async function checkImageRegistry(host: string, image: string): Promise<void> {
  await checkRegistryHost(host, `image ${image}`).catch((err: unknown) => {
    throw err instanceof SourceRefused ? new SourceError(err.message) : err;
  });
}
