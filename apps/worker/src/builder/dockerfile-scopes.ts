import type { Instruction, ParsedDockerfile } from './dockerfile-parse.js';
import { goLower, safeExpand, shellWords, type Expanded, type Lookup } from './dockerfile-words.js';

// Which stage each instruction of a Dockerfile belongs to and which variables it sees, as the engine scopes ARG and
// ENV across stages.

/** Variables only the engine knows: the automatic platform args and the build args the worker itself passes. */
const FROM_OUTSIDE = /^(?:(?:BUILD|TARGET)(?:PLATFORM|OS|ARCH|VARIANT)|BUILDKIT_\w*|no_proxy)$/;

/** An instruction with the variables it sees, and the stage it belongs to (-1: before the first FROM). */
export interface Scoped {
  instruction: Instruction;
  stage: number;
  lookup: Lookup;
}

/** What the stages of a Dockerfile are called (lower case; unnamed stages by index) and each instruction's scope. */
export interface Scopes {
  /** The global ARGs, which FROM lines see. */
  global: Lookup;
  stageNames: Map<string, number>;
  items: Scoped[];
}

interface StageVars {
  env: Map<string, string | undefined>;
  args: Map<string, string | undefined>;
  /** FROM scratch: a name the Dockerfile did not set is empty rather than unknown. */
  complete: boolean;
}

/**
 * Follows ARG and ENV through the stages. What a Dockerfile sets with defaults is known; whatever a base image's
 * ENV may set is not, so a name the stage did not set is unknown unless the stage starts from scratch. ENV wins
 * over ARG, and a Dockerfile ARG over the image's ENV (measured on engine 20.10).
 */
export function scopeInstructions(parsed: ParsedDockerfile): Scopes {
  const globals = new Map<string, string | undefined>();
  const global: Lookup = (name) => globals.get(name);
  const stageNames = new Map<string, number>();
  const stages: StageVars[] = [];
  const items: Scoped[] = [];
  const lookupIn = (s: StageVars): Lookup => (name) => (s.env.has(name) ? s.env.get(name) : s.args.has(name) ? s.args.get(name) : s.complete ? '' : undefined);
  let current: StageVars | undefined;
  for (const instruction of parsed.instructions) {
    const { keyword, rest } = instruction;
    if (keyword === 'FROM') {
      const words = rest.trim().split(/\s+/);
      const image = safeExpand(words[0] ?? '', parsed.escape, global);
      const parent = image?.unknownAt === undefined ? stageNames.get(goLower(image?.value ?? '')) : undefined;
      const from = parent === undefined ? undefined : stages[parent];
      current = from
        ? { env: new Map(from.env), args: new Map(from.args), complete: from.complete }
        : { env: new Map(), args: new Map(), complete: image?.value === 'scratch' && image.unknownAt === undefined };
      stages.push(current);
      const index = stages.length - 1;
      if (words[1]?.toUpperCase() === 'AS' && words[2]) stageNames.set(goLower(words[2]), index);
      stageNames.set(String(index), index);
      items.push({ instruction, stage: index, lookup: global });
      continue;
    }
    const lookup = current ? lookupIn(current) : global;
    items.push({ instruction, stage: stages.length - 1, lookup });
    if (keyword === 'ARG') {
      for (const word of shellWords(rest)) {
        const eq = word.indexOf('=');
        const name = eq < 0 ? word : word.slice(0, eq);
        let value: string | undefined;
        if (FROM_OUTSIDE.test(name)) value = undefined;
        else if (eq >= 0) value = known(safeExpand(word.slice(eq + 1), parsed.escape, lookup));
        else if (!current) value = '';
        else value = globals.has(name) ? globals.get(name) : current.complete ? '' : undefined;
        (current ? current.args : globals).set(name, value);
      }
    } else if (keyword === 'ENV' && current) {
      const words = shellWords(rest);
      if (words.length && !words[0].includes('=')) {
        // The legacy `ENV name value with spaces` form.
        current.env.set(words[0], known(safeExpand(rest.trim().slice(words[0].length).trim(), parsed.escape, lookup)));
      } else {
        for (const word of words) {
          const eq = word.indexOf('=');
          if (eq > 0) current.env.set(word.slice(0, eq), known(safeExpand(word.slice(eq + 1), parsed.escape, lookup)));
        }
      }
    }
  }
  return { global, stageNames, items };
}

function known(e: Expanded | undefined): string | undefined {
  return e && e.unknownAt === undefined ? e.value : undefined;
}
