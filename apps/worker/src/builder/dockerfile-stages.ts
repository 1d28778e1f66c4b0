import { parseDockerfile, type ParsedDockerfile } from './dockerfile-parse.js';
import { flagValue, goLower, safeExpand } from './dockerfile-words.js';
import { scopeInstructions } from './dockerfile-scopes.js';

/** One stage of a Dockerfile, as the layer cache names it. */
export interface Stage {
  index: number;
  /** The `AS` name, lower case (BuildKit matches a build's `target` against it); unnamed stages cannot be targets. */
  name?: string;
  /** What the stage starts from: an image as written with known variables expanded, or a previous stage. */
  from: { image: string; flags: string[] } | { stage: number };
  /** Earlier stages it reads (`COPY --from`, `RUN --mount=from=`), besides `from`. */
  uses: number[];
  /** Its instructions (FROM excluded), normalised: comments, continuations and runs of blanks do not count. */
  instructions: string[];
}

/**
 * The stages of a Dockerfile and which of them the final stage needs (itself included), or undefined when the text
 * cannot be read (the engine then says why). BuildKit builds only the stages the target needs, so only those have
 * layers a cache ref could carry.
 */
export function stagesOf(dockerfile: string): { stages: Stage[]; needed: number[] } | undefined {
  let parsed: ParsedDockerfile;
  try {
    parsed = parseDockerfile(dockerfile, { heredocs: true });
  } catch {
    return undefined;
  }
  const { items, stageNames, global } = scopeInstructions(parsed);
  const stages: Stage[] = [];
  const stageOf = (word: string | undefined, lookup: typeof global): number | undefined => {
    if (word === undefined) return undefined;
    const e = safeExpand(word, parsed.escape, lookup);
    return e && e.unknownAt === undefined ? stageNames.get(goLower(e.value)) : undefined;
  };
  for (const { instruction: ins, stage, lookup } of items) {
    if (stage < 0) continue;
    if (ins.keyword === 'FROM') {
      const words = ins.rest.trim().split(/\s+/);
      const parent = stageOf(words[0], global);
      const image = safeExpand(words[0] ?? '', parsed.escape, global)?.value ?? words[0] ?? '';
      const name = words[1]?.toUpperCase() === 'AS' && words[2] ? goLower(words[2]) : undefined;
      stages.push({ index: stage, ...(name ? { name } : {}), from: parent !== undefined && parent < stage ? { stage: parent } : { image, flags: ins.flags }, uses: [], instructions: [] });
      continue;
    }
    const s = stages[stage];
    const mountFroms = ins.flags.filter((f) => f.startsWith('--mount=')).flatMap((f) => /(?:^|,)from=([^,]+)/.exec(f.slice(8))?.[1] ?? []);
    for (const word of [flagValue(ins.flags, 'from'), ...mountFroms]) {
      const used = stageOf(word, lookup);
      if (used !== undefined && used < stage && !s.uses.includes(used)) s.uses.push(used);
    }
    const body = ins.heredocs.length ? parsed.lines.slice(ins.endLine + 1, ins.bodyEndLine + 1).join('\n') : '';
    s.instructions.push([ins.keyword, ...ins.flags, ins.rest.replace(/\s+/g, ' ').trim()].join(' ') + (body ? `\n${body}` : ''));
  }
  if (!stages.length) return undefined;
  const needed = new Set<number>();
  const visit = (i: number) => {
    if (needed.has(i)) return;
    needed.add(i);
    const s = stages[i];
    if ('stage' in s.from) visit(s.from.stage);
    s.uses.forEach(visit);
  };
  visit(stages.length - 1);
  return { stages, needed: [...needed].sort((a, b) => a - b) };
}
