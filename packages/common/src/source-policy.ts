import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { invalidArgument, ImgbuilderError } from './errors.js';

const ALLOWED_SCHEMES = new Set(['https:', 'http:', 'ssh:', 'git:']);

export interface ParsedSourceUrl {
  kind: 'url' | 'scp' | 'local';
  host?: string;
}

/** Classifies a git remote / download URL: a real URL, scp-like `user@host:path`, or a local path / file URL. */
export function parseSourceUrl(raw: string): ParsedSourceUrl {
  if (/^file:/i.test(raw)) return { kind: 'local' };
  const scp = /^(?:[^@/\s]+@)?(\[[^\]]+\]|[^:/\s]+):(?!\/\/)/.exec(raw);
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(raw)) {
    if (scp && !/^[a-zA-Z]:[\\/]/.test(raw)) return { kind: 'scp', host: scp[1].replace(/^\[|\]$/g, '') };
    return { kind: 'local' };
  }
  const u = new URL(raw);
  return { kind: 'url', host: u.hostname.replace(/^\[|\]$/g, '') };
}

/** Link-local and cloud metadata addresses: never fetched on a user's behalf. */
export function isForbiddenAddress(address: string): boolean {
  const a = address.toLowerCase().replace(/^\[|\]$/g, '');
  if (isIP(a) === 4) return a.startsWith('169.254.') || a === '0.0.0.0';
  if (isIP(a) === 6) {
    if (a.startsWith('::ffff:')) return isForbiddenAddress(a.slice(7));
    return a === 'fd00:ec2::254' || /^fe[89ab][0-9a-f]:/.test(a) || a === '::';
  }
  return false;
}

/**
 * Refuses URLs imgbuilder will not fetch: schemes other than https/http/ssh/git, local paths and file:// (unless
 * allowed), and link-local / metadata addresses written literally. Host names are checked again after DNS.
 */
export function checkSourceUrl(raw: string, what: string, allowLocal: boolean): void {
  let parsed: ParsedSourceUrl;
  try {
    parsed = parseSourceUrl(raw);
  } catch {
    throw invalidArgument(`${what} is not a valid URL`);
  }
  if (parsed.kind === 'local') {
    if (allowLocal) return;
    throw invalidArgument(`${what}: local paths and file:// URLs are refused (set IMGBUILDER_ALLOW_LOCAL_SOURCES=true on a trusted single-user setup)`);
  }
  if (parsed.kind === 'url') {
    const scheme = new URL(raw).protocol;
    if (!ALLOWED_SCHEMES.has(scheme)) throw invalidArgument(`${what}: scheme ${scheme.slice(0, -1)} is not allowed (use https, http, ssh or git)`);
  }
  if (parsed.host && isForbiddenAddress(parsed.host)) throw invalidArgument(`${what}: address ${parsed.host} is link-local or a cloud metadata endpoint and is refused`);
}

/** After DNS: a host name that resolves to a refused address fails the build. */
export async function checkResolvedHost(raw: string, what: string): Promise<void> {
  const parsed = parseSourceUrl(raw);
  if (!parsed.host || isIP(parsed.host)) return;
  let addresses: { address: string }[];
  try {
    addresses = await lookup(parsed.host, { all: true });
  } catch {
    return; // Unresolvable: the fetch itself fails with a clearer error.
  }
  const bad = addresses.find((a) => isForbiddenAddress(a.address));
  if (bad) throw new ImgbuilderError('FAILED_PRECONDITION', `${what}: host ${parsed.host} resolves to ${bad.address}, a link-local or metadata address; refused`);
}

/** Removes `user:password@` from URLs in free text (log lines, error messages). */
export function stripUrlCredentials(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/)[^@/\s]+@/gi, '$1***@');
}
