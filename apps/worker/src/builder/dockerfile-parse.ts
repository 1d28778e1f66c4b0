/**
 * The worker's one Dockerfile parser, written after the engine's (moby/buildkit `frontend/dockerfile/parser`): parser
 * directives, the escape character, comments and empty lines inside continuations, builder flags (`--from=…`), the
 * JSON-array form and here-documents. The worker reads a Dockerfile before the engine does, to check what the engine
 * would fetch and to rewrite it, so where engine versions read a file differently the callers look at every reading.
 */
import { DockerfileSyntaxError } from '../errors.js';

/** One instruction and where it stands in the file. */
export interface Instruction {
  /** Upper case (`ADD`). */
  keyword: string;
  /** First and last physical line (0-based) of the instruction, continuation lines included. */
  startLine: number;
  endLine: number;
  /** Last line including the bodies of its here-documents (endLine without any). */
  bodyEndLine: number;
  /** Leading `--name=value` words, as the engine reads them (quotes removed). */
  flags: string[];
  /** Everything after the flags, continuation lines joined. */
  rest: string;
  /** Here-document delimiters opened on the instruction's line, in order. */
  heredocs: string[];
}

export interface ParsedDockerfile {
  lines: string[];
  escape: string;
  instructions: Instruction[];
}

/** Instructions whose arguments may open here-documents (newer frontends only). */
const HEREDOC_KEYWORDS = new Set(['RUN', 'COPY', 'ADD']);
const DIRECTIVE = /^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$/;

/**
 * The engine trims with Go's unicode.IsSpace, which also counts U+0085; JavaScript's \s counts U+FEFF besides. The
 * worker trims by both, so it sees every instruction the engine sees (and perhaps more, which the engine refuses).
 */
const SPACE = /[\s\u0085]/;
const trimStart = (s: string) => s.replace(/^[\s\u0085]+/, '');

/** Go's strings.ToLower, as far as it matters here: it also maps U+0130 (İ) to `i` and the Kelvin sign to `k`. */
export function goLower(s: string): string {
  return s.replace(/\u0130/g, 'i').replace(/\u212A/g, 'k').toLowerCase();
}

/** The lines of a Dockerfile as the engine's scanner splits them (a leading byte-order mark dropped). */
export function dockerfileLines(text: string): string[] {
  return text.replace(/^\uFEFF/, '').split('\n').map((l) => l.replace(/\r$/, ''));
}

/** The leading block of `#key=value` lines, keys lower-cased, in order (the escape and syntax directives live here). */
export function leadingDirectives(lines: string[], comment = '#'): { key: string; value: string; line: number }[] {
  const re = comment === '#' ? DIRECTIVE : /^\/\/\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$/;
  const out: { key: string; value: string; line: number }[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = re.exec(trimStart(lines[i]));
    if (!m) break;
    out.push({ key: m[1].toLowerCase(), value: m[2], line: i });
  }
  return out;
}

/**
 * The escape character. Newer parsers honour `# escape=` anywhere in the leading directive block, the one in engine
 * 20.10 only on the first line: a file the two would read with different escape characters is refused, since the
 * worker could not know which instructions the engine sees.
 */
export function escapeOf(lines: string[]): string {
  const directive = leadingDirectives(lines).find((d) => d.key === 'escape');
  const value = directive?.value ?? '\\';
  if (value !== '\\' && value !== '`') throw new DockerfileSyntaxError(`invalid escape directive ${JSON.stringify(value)}: it must be \` or \\`);
  const legacy = /^#[ \t]*escape[ \t]*=[ \t]*(.)/i.exec(lines[0] ?? '')?.[1] ?? '\\';
  if (legacy !== value) throw new DockerfileSyntaxError('the escape directive must be the first line of the Dockerfile');
  return value;
}

/** Parses a Dockerfile into instructions; `heredocs` chooses whether `<<EOF` opens a here-document. */
export function parseDockerfile(text: string, opts: { heredocs: boolean }): ParsedDockerfile {
  const lines = dockerfileLines(text);
  const escape = escapeOf(lines);
  const continued = new RegExp(`${escape === '\\' ? '\\\\' : '`'}[ \\t]*$`);
  const instructions: Instruction[] = [];
  for (let i = 0; i < lines.length; i++) {
    const first = trimStart(lines[i]);
    if (!first || first.startsWith('#')) continue;
    const startLine = i;
    let line = first;
    let open = continued.test(line);
    if (open) line = line.replace(continued, '');
    while (open && i + 1 < lines.length) {
      const next = lines[++i];
      // Comment and empty lines inside a continuation are dropped, as the engine does.
      if (/^[\s\u0085]*#/.test(next) || !trimStart(next)) continue;
      open = continued.test(next);
      line += open ? next.replace(continued, '') : next;
    }
    const endLine = i;
    const m = /^([^\s\u0085]+)[\s\u0085]*([\s\S]*)$/.exec(trimStart(line));
    if (!m) continue;
    const keyword = goLower(m[1]).toUpperCase();
    const { flags, rest } = extractFlags(m[2]);
    let heredocs = opts.heredocs && HEREDOC_KEYWORDS.has(keyword) ? heredocsOf(rest) : [];
    for (const doc of heredocs) {
      // The body runs to a line that is the delimiter (`<<-` also strips leading tabs).
      let ended = false;
      while (!ended && i + 1 < lines.length) {
        const body = lines[++i];
        ended = body === doc.name || (doc.chomp && body.replace(/^\t+/, '') === doc.name);
      }
      if (!ended) {
        // Engines that read here-documents refuse a body that never ends; the others read the lines as the
        // reading without here-documents does (`$((1 <<2))` in a RUN line is shell arithmetic to them).
        i = endLine;
        heredocs = [];
        break;
      }
    }
    instructions.push({ keyword, startLine, endLine, bodyEndLine: i, flags, rest, heredocs: heredocs.map((d) => d.name) });
  }
  return { lines, escape, instructions };
}

/**
 * Splits leading `--flag` words off an instruction's arguments exactly as the engine does (`extractBuilderFlags`):
 * quotes inside a word are removed, a backslash escapes the next character, `--` alone ends the flags.
 */
export function extractFlags(args: string): { flags: string[]; rest: string } {
  const flags: string[] = [];
  let pos = 0;
  for (;;) {
    while (pos < args.length && SPACE.test(args[pos])) pos++;
    if (!args.startsWith('--', pos)) return { flags, rest: args.slice(pos) };
    let word = '';
    let quote = '';
    let blankOk = false;
    for (; pos < args.length; pos++) {
      let ch = args[pos];
      if (!quote && SPACE.test(ch)) break;
      if (!quote && (ch === '"' || ch === "'")) {
        quote = ch;
        blankOk = true;
        continue;
      }
      if (quote && ch === quote) {
        quote = '';
        continue;
      }
      if (ch === '\\') {
        if (pos + 1 === args.length) continue;
        ch = args[++pos];
      }
      word += ch;
    }
    if (word === '--') return { flags, rest: args.slice(pos).trimStart() };
    if (blankOk || word) flags.push(word);
  }
}

/** The value of a `--name=value` flag (the last one given), or undefined. */
export function flagValue(flags: string[], name: string): string | undefined {
  let value: string | undefined;
  for (const f of flags) if (f.startsWith(`--${name}=`)) value = f.slice(name.length + 3);
  return value;
}

/** Here-document openers among the words of an instruction (`<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF`). */
function heredocsOf(rest: string): { name: string; chomp: boolean }[] {
  const out: { name: string; chomp: boolean }[] = [];
  for (const word of rest.split(/\s+/)) {
    const m = /^\d*<<(-?)([^<]+)$/.exec(word);
    if (!m) continue;
    // A delimiter ending in an escape character makes its last line a continuation to readers without
    // here-documents, hiding the next line from them: such delimiters are refused, not guessed at.
    if (/[\\`]/.test(m[2])) throw new DockerfileSyntaxError(`here-document delimiter ${word}: escape characters in delimiters are not supported`);
    // The engine reads the delimiter as a shell word: quotes go, variables are empty.
    out.push({ chomp: m[1] === '-', name: expandWord(m[2], '\\', () => '').value });
  }
  return out;
}

/**
 * The source and destination words of ADD / COPY: a JSON array of strings, or whitespace-separated words (the
 * engine splits on whitespace before it removes quotes). `json` says which form the instruction used.
 */
export function pathArgs(rest: string): { words: string[]; json: boolean } {
  const text = rest.trim();
  if (text.startsWith('[')) {
    try {
      const parsed: unknown = JSON.parse(text);
      if (Array.isArray(parsed) && parsed.every((p) => typeof p === 'string')) return { words: parsed as string[], json: true };
    } catch {
      // Not JSON: the shell form, as the engine falls back to.
    }
  }
  return { words: text ? text.split(/[\t\v\f\r ]+/) : [], json: false };
}

/** A variable's value; undefined when it cannot be known before the build (a base image's ENV, a platform arg). */
export type Lookup = (name: string) => string | undefined;

/** A word with its variables expanded. `unknownAt`: the length of the text before the first unknown variable. */
export interface Expanded {
  value: string;
  unknownAt?: number;
}

/**
 * Expands one word as the engine's shell lexer does for ADD, COPY, FROM and flags: single and double quotes,
 * the escape character, `$name`, `${name}` and `${name:-word}` / `${name:+word}` / `${name-word}` / `${name+word}`.
 * An unknown variable adds nothing and is recorded in `unknownAt`.
 */
export function expandWord(word: string, escape: string, lookup: Lookup): Expanded {
  let out = '';
  let unknownAt: number | undefined;
  const unknown = () => {
    unknownAt ??= out.length;
  };
  const dollar = (i: number): number => {
    const next = word[i + 1];
    if (next === '{') {
      const close = word.indexOf('}', i + 2);
      if (close < 0) throw new DockerfileSyntaxError(`missing '}' in ${JSON.stringify(word)}`);
      const inner = word.slice(i + 2, close);
      const m = /^([A-Za-z0-9_]+)(?:(:?[-+])([\s\S]*))?$/.exec(inner);
      if (!m) {
        unknown();
        return close + 1;
      }
      const value = lookup(m[1]);
      if (!m[2]) {
        if (value === undefined) unknown();
        else out += value;
        return close + 1;
      }
      if (value === undefined) {
        unknown();
        return close + 1;
      }
      const set = m[2].startsWith(':') ? value !== '' : true;
      const alt = expandWord(m[3], escape, lookup);
      const useAlt = m[2].endsWith('-') ? !set : set;
      if (!useAlt) out += m[2].endsWith('-') ? value : '';
      else {
        if (alt.unknownAt !== undefined) unknownAt ??= out.length + alt.unknownAt;
        out += alt.value;
      }
      return close + 1;
    }
    const name = /^[A-Za-z0-9_]+/.exec(word.slice(i + 1))?.[0];
    if (!name) {
      out += '$';
      return i + 1;
    }
    const value = lookup(name);
    if (value === undefined) unknown();
    else out += value;
    return i + 1 + name.length;
  };
  let i = 0;
  while (i < word.length) {
    const c = word[i];
    if (c === "'") {
      const close = word.indexOf("'", i + 1);
      if (close < 0) throw new DockerfileSyntaxError(`unexpected end of statement while looking for matching single-quote in ${JSON.stringify(word)}`);
      out += word.slice(i + 1, close);
      i = close + 1;
    } else if (c === '"') {
      i++;
      while (i < word.length && word[i] !== '"') {
        if (word[i] === escape && i + 1 < word.length && ['"', '$', escape].includes(word[i + 1])) {
          out += word[i + 1];
          i += 2;
        } else if (word[i] === '$') i = dollar(i);
        else out += word[i++];
      }
      if (i >= word.length) throw new DockerfileSyntaxError(`unexpected end of statement while looking for matching double-quote in ${JSON.stringify(word)}`);
      i++;
    } else if (c === escape) {
      if (i + 1 < word.length) out += word[i + 1];
      i += 2;
    } else if (c === '$') i = dollar(i);
    else out += word[i++];
  }
  return unknownAt === undefined ? { value: out } : { value: out, unknownAt };
}

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

/** expandWord, with a word the engine could not parse either counted as unknown. */
export function safeExpand(word: string, escape: string, lookup: Lookup): Expanded | undefined {
  try {
    return expandWord(word, escape, lookup);
  } catch {
    return undefined;
  }
}

/** Splits on unquoted whitespace, keeping quotes (ARG and ENV `name=value` pairs). */
function shellWords(text: string): string[] {
  return text.match(/(?:[^\s"'\\]+|"(?:[^"\\]|\\.)*"|'[^']*'|\\.)+/g) ?? [];
}

/** One `--mount=` flag's fields in order, as the engine reads them (a CSV record of `key=value`; keys lower case). */
export function mountFields(value: string): { key: string; value?: string }[] {
  return csvRecord(value).map((field) => {
    const eq = field.indexOf('=');
    return eq < 0 ? { key: goLower(field) } : { key: goLower(field.slice(0, eq)), value: field.slice(eq + 1) };
  });
}

/** The fields written back as one CSV record, quoted where the reader needs it. */
export function mountText(fields: { key: string; value?: string }[]): string {
  return fields
    .map((f) => (f.value === undefined ? f.key : `${f.key}=${f.value}`))
    .map((f) => (/[",\r\n]|^[ \t]/.test(f) ? `"${f.replace(/"/g, '""')}"` : f))
    .join(',');
}

/** A flag word written so that extractFlags reads it back unchanged. */
export function flagText(flag: string): string {
  return flag.replace(/[\s"'\\]/g, '\\$&');
}

/** One record of Go's encoding/csv (the engine's reader for `--mount`). */
function csvRecord(text: string): string[] {
  const out: string[] = [];
  let i = 0;
  for (;;) {
    let field = '';
    if (text[i] === '"') {
      for (i++; ; ) {
        const q = text.indexOf('"', i);
        if (q < 0) throw new DockerfileSyntaxError(`unterminated quote in --mount=${text}`);
        field += text.slice(i, q);
        i = q + 1;
        if (text[i] !== '"') break;
        field += '"';
        i++;
      }
    }
    const comma = text.indexOf(',', i);
    out.push(field + text.slice(i, comma < 0 ? undefined : comma));
    if (comma < 0) return out;
    i = comma + 1;
  }
}
