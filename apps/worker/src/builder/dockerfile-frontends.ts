import { parseImageRef, type ImageRef } from '@imgbuilder/common/image-ref';
import { SourceError } from '../errors.js';
import { dockerfileLines, leadingDirectives } from './dockerfile-parse.js';

/** A `syntax` directive: the frontend image the engine would pull and run instead of its own Dockerfile parser. */
export interface SyntaxDirective {
  /** The line as written. */
  line: string;
  image: string;
}

/**
 * Every `syntax` directive any engine version would honour: the leading `#` directive block (20.10 reads every key
 * there and keeps the last; newer frontends skip a `#!` line first), the `//` form and a JSON document's `syntax`
 * key. Reading more than one engine does only makes the check stricter.
 */
export function syntaxDirectives(text: string): SyntaxDirective[] {
  const lines = dockerfileLines(text);
  const shebang = lines[0]?.startsWith('#!') ? 1 : 0;
  const found: SyntaxDirective[] = [];
  for (const comment of ['#', '//']) {
    for (const skip of new Set([0, shebang])) {
      for (const d of leadingDirectives(lines.slice(skip), comment)) {
        if (d.key === 'syntax') found.push({ line: lines[d.line + skip].trim(), image: d.value.split(/\s+/)[0] });
      }
    }
  }
  try {
    const doc: unknown = JSON.parse(lines.slice(shebang).join('\n'));
    const value = (doc as { syntax?: unknown } | null)?.syntax;
    if (typeof value === 'string') found.push({ line: `"syntax": ${JSON.stringify(value)}`, image: value.split(/\s+/)[0] });
  } catch {
    // Not JSON: no JSON directive.
  }
  return found;
}

/**
 * Whether an image matches one of the IMGBUILDER_ALLOWED_FRONTENDS patterns: `repository` (any tag or digest),
 * `repository:tag` or `repository@digest`; `*` stands for any run of characters but `/`.
 */
export function frontendAllowed(image: string, patterns: readonly string[]): boolean {
  let ref: ImageRef;
  try {
    ref = parseImageRef(image);
  } catch {
    return false;
  }
  return patterns.some((p) => {
    const at = p.indexOf('@');
    const digest = at < 0 ? undefined : p.slice(at + 1);
    const named = at < 0 ? p : p.slice(0, at);
    const colon = named.lastIndexOf(':');
    const hasTag = colon > named.lastIndexOf('/');
    const repo = hasTag ? named.slice(0, colon) : named;
    const tag = hasTag ? named.slice(colon + 1) : undefined;
    if (!glob(normaliseRepository(repo)).test(`${ref.domain}/${ref.path}`)) return false;
    if (digest && ref.digest !== digest) return false;
    return tag === undefined || (ref.tag !== undefined && glob(tag).test(ref.tag));
  });
}

/** Refuses a Dockerfile whose syntax directive names a frontend outside the allow list, before anything is pulled. */
export function checkFrontends(text: string, patterns: readonly string[]): void {
  for (const d of syntaxDirectives(text)) {
    if (frontendAllowed(d.image, patterns)) continue;
    throw new SourceError(
      `Dockerfile parser directive "${d.line}": frontend ${d.image} is not allowed here (allowed: ${patterns.join(', ') || 'none'}; IMGBUILDER_ALLOWED_FRONTENDS); remove the line to use the engine's own Dockerfile frontend`,
    );
  }
}

/** `docker/dockerfile` → `docker.io/docker/dockerfile`, `alpine` → `docker.io/library/alpine`, as Docker names images. */
function normaliseRepository(repo: string): string {
  const parts = repo.split('/');
  if (parts.length > 1 && (parts[0].includes('.') || parts[0].includes(':') || parts[0] === 'localhost')) return repo;
  return `docker.io/${parts.length === 1 ? 'library/' : ''}${repo}`;
}

function glob(pattern: string): RegExp {
  return new RegExp(`^${pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*')}$`);
}
