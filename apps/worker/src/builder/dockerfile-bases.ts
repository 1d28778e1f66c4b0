import { parseDockerfile, type ParsedDockerfile } from './dockerfile-parse.js';
import { scopeInstructions } from './dockerfile-scopes.js';
import { flagValue, goLower, mountFields, safeExpand } from './dockerfile-words.js';

/** An image a Dockerfile makes the engine pull: a stage's base, `COPY --from=<image>` or `RUN --mount=from=<image>`. */
export interface ImageUse {
  /** The reference with the variables the worker can know expanded. */
  image: string;
  /** The reference as written. */
  word: string;
  /** Set when a variable could not be known: the length of the text before it. */
  unknownAt?: number;
  /** The instruction, for messages (`FROM x`, `COPY --from=x`). */
  where: string;
  line: number;
}

/**
 * Every image reference of a Dockerfile, as far as it can be known before the build: build args get their
 * defaults (the API passes none), stage names (and indexes) and `scratch` are not images.
 */
export function imageUsesOf(parsed: ParsedDockerfile): ImageUse[] {
  const { items, stageNames, global } = scopeInstructions(parsed);
  const uses: ImageUse[] = [];
  const add = (word: string, lookup: typeof global, where: string, line: number) => {
    const e = safeExpand(word, parsed.escape, lookup);
    if (!e) return;
    if (e.unknownAt === undefined && (e.value === 'scratch' || stageNames.has(goLower(e.value)) || !e.value)) return;
    uses.push({ image: e.value, word, ...(e.unknownAt === undefined ? {} : { unknownAt: e.unknownAt }), where, line });
  };
  for (const { instruction: ins, lookup } of items) {
    if (ins.keyword === 'FROM') add(ins.rest.trim().split(/\s+/)[0] ?? '', global, 'FROM', ins.startLine);
    const from = ins.keyword === 'COPY' ? flagValue(ins.flags, 'from') : undefined;
    if (from !== undefined) add(from, lookup, `${ins.keyword} --from`, ins.startLine);
    if (ins.keyword !== 'RUN') continue;
    for (const flag of ins.flags) {
      if (!flag.startsWith('--mount=')) continue;
      let fields;
      try {
        fields = mountFields(flag.slice('--mount='.length));
      } catch {
        continue;
      }
      const mountFrom = fields.filter((f) => f.key === 'from').pop()?.value;
      if (mountFrom) add(mountFrom, lookup, 'RUN --mount from', ins.startLine);
    }
  }
  return uses;
}

/** The images the stages start FROM that are fully known, each once (the worker pulls private ones first). */
export function baseImagesOf(dockerfile: string): string[] {
  let parsed: ParsedDockerfile;
  try {
    parsed = parseDockerfile(dockerfile, { heredocs: true });
  } catch {
    return []; // The build fails on it anyway; the engine says why.
  }
  const images = imageUsesOf(parsed).filter((u) => u.where === 'FROM' && u.unknownAt === undefined).map((u) => u.image);
  return [...new Set(images)];
}

/**
 * The Dockerfile with the image of each FROM line that names a key of `names` (as baseImagesOf reads it) replaced by
 * its value. Only single-line FROM instructions are rewritten; anything else keeps its original name.
 */
export function withBases(dockerfile: string, names: ReadonlyMap<string, string>): string {
  const args = new Map<string, string>();
  let seenFrom = false;
  return dockerfile
    .split('\n')
    .map((line) => {
      const arg = /^\s*ARG\s+(.*)$/i.exec(line);
      if (arg && !seenFrom) {
        for (const a of arg[1].trim().split(/\s+/)) {
          const [k, ...v] = a.split('=');
          args.set(k, v.join('=').replace(/^"(.*)"$/, '$1'));
        }
      }
      const from = /^(\s*FROM\s+(?:--\S+\s+)*)(\S+)(.*)$/i.exec(line);
      if (!from) return line;
      seenFrom = true;
      const image = from[2].replace(/\$\{(\w+)\}|\$(\w+)/g, (m, a: string, b: string) => args.get(a ?? b) ?? m);
      const to = names.get(image);
      return to ? `${from[1]}${to}${from[3]}` : line;
    })
    .join('\n');
}
