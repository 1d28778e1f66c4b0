/**
 * The worker's one Dockerfile parser, written after the engine's (moby/buildkit `frontend/dockerfile/parser`): parser
 * directives, the escape character, comments and empty lines inside continuations, builder flags (`--from=…`), the
 * JSON-array form and here-documents. The worker reads a Dockerfile before the engine does, to check what the engine
 * would fetch and to rewrite it, so where engine versions read a file differently the callers look at every reading.
 */
import { DockerfileSyntaxError } from '../errors.js';
import { expandWord, extractFlags, goLower, trimStart } from './dockerfile-words.js';


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
