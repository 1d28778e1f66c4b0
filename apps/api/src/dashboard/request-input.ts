import { HttpError } from '../errors.js';

export { HttpError };

const MAX_TEXT_PARAM = 256;

/** An integer query parameter in [min, max]; absent or empty gives `fallback`, anything else is a 400. */
export function intParam(q: URLSearchParams, name: string, fallback: number, min: number, max: number): number {
  const raw = q.get(name);
  if (raw === null || raw === '') return fallback;
  const n = /^\d{1,16}$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new HttpError(400, `${name} must be an integer from ${min} to ${max}`);
  return n;
}

/** A text query parameter (a filter) of at most 256 characters; absent or empty gives undefined. */
export function textParam(q: URLSearchParams, name: string): string | undefined {
  const raw = q.get(name);
  if (raw && raw.length > MAX_TEXT_PARAM) throw new HttpError(400, `${name} must be at most ${MAX_TEXT_PARAM} characters`);
  return raw || undefined;
}

/**
 * Where to go after logging in: `next` resolved against the dashboard's own origin, as a browser would resolve it,
 * and kept only when it stays there; anything else is `/`. Browsers drop tabs and newlines and read `\` as `/`, so
 * `/\t/evil.example/` is `//evil.example/`: another origin.
 */
export function safeNext(next: string | null): string {
  if (!next) return '/';
  const here = new URL('http://dashboard.invalid/');
  let url: URL;
  try {
    url = new URL(next, here);
  } catch {
    return '/';
  }
  // A path starting with two slashes would leave again from a Location header (scheme-relative).
  if (url.origin !== here.origin || url.pathname.startsWith('//')) return '/';
  return `${url.pathname}${url.search}${url.hash}`;
}
