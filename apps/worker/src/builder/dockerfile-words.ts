/**
 * The words of a Dockerfile instruction as the engine's shell lexer reads them (moby/buildkit
 * `frontend/dockerfile/shell` and `instructions`): builder flags, quoting and the escape character, variables, the
 * `--mount` CSV records. dockerfile-parse.ts splits a file into instructions; this reads inside one.
 */
import { DockerfileSyntaxError } from '../errors.js';

/**
 * The engine trims with Go's unicode.IsSpace, which also counts U+0085; JavaScript's \s counts U+FEFF besides. The
 * worker trims by both, so it sees every instruction the engine sees (and perhaps more, which the engine refuses).
 */
const SPACE = /[\s\u0085]/;
export const trimStart = (s: string) => s.replace(/^[\s\u0085]+/, '');

/** Go's strings.ToLower, as far as it matters here: it also maps U+0130 (İ) to `i` and the Kelvin sign to `k`. */
export function goLower(s: string): string {
  return s.replace(/\u0130/g, 'i').replace(/\u212A/g, 'k').toLowerCase();
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

/** expandWord, with a word the engine could not parse either counted as unknown. */
export function safeExpand(word: string, escape: string, lookup: Lookup): Expanded | undefined {
  try {
    return expandWord(word, escape, lookup);
  } catch {
    return undefined;
  }
}

/** Splits on unquoted whitespace, keeping quotes (ARG and ENV `name=value` pairs). */
export function shellWords(text: string): string[] {
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
