import { isIP } from 'node:net';
import { SourceRefused } from './errors.js';
import { canonicalHost, checkFetchUrl } from './fetch-policy.js';
import { quote } from './client-text.js';
import { LOG_KEY_PREFIX } from './build-life/index.js';

const ALLOWED_SCHEMES = new Set(['https:', 'http:', 'ssh:', 'git:']);

export interface ParsedSourceUrl {
  /** `helper` is git's `<transport>::<address>` syntax (ext::, fd::), which runs programs. */
  kind: 'url' | 'scp' | 'local' | 'helper';
  host?: string;
}

/** Classifies a git remote / download URL: a real URL, scp-like `user@host:path`, a local path / file URL. */
export function parseSourceUrl(raw: string): ParsedSourceUrl {
  if (/^file:/i.test(raw)) return { kind: 'local' };
  if (/^[a-z][a-z0-9+.-]*::/i.test(raw)) return { kind: 'helper' };
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(raw)) {
    // Git's rule: a colon before any slash makes it scp-like ssh; otherwise it is a local path.
    const scp = /^(?:[^@/\s]+@)?(\[[^\]]+\]|[^:/\s]+):(?!\/\/)/.exec(raw);
    if (scp && !/^[a-zA-Z]:[\\/]/.test(raw)) return { kind: 'scp', host: canonicalHost(scp[1].replace(/^\[|\]$/g, '')) };
    return { kind: 'local' };
  }
  const u = new URL(raw);
  return { kind: 'url', host: canonicalHost(u.hostname.replace(/^\[|\]$/g, '')) };
}

/**
 * Refuses URLs imgbuilder will not fetch: schemes other than https/http/ssh/git, git transport helpers, local paths
 * and file:// (unless allowed), hosts that are no host names (option-like, shell characters: ssh gets them), and
 * addresses the fetch policy refuses when written literally. Host names are checked again after DNS
 * (fetch-policy.ts). `showPath: false` keeps the path out of messages (one-time secret URLs).
 */
export function checkSourceUrl(raw: string, what: string, allowLocal: boolean, opts: { showPath?: boolean } = {}): void {
  let parsed: ParsedSourceUrl;
  try {
    parsed = parseSourceUrl(raw);
  } catch {
    throw new SourceRefused(what, `${what} is not a valid URL`);
  }
  if (parsed.kind === 'helper') throw new SourceRefused(what, `${what}: git transport helpers ("<transport>::<address>") are refused`);
  if (parsed.kind === 'local') {
    if (allowLocal) return;
    throw new SourceRefused(what, `${what}: local paths and file:// URLs are refused (set IMGBUILDER_ALLOW_LOCAL_SOURCES=true on a trusted single-user setup)`);
  }
  if (parsed.kind === 'url') {
    const scheme = new URL(raw).protocol;
    if (!ALLOWED_SCHEMES.has(scheme)) throw new SourceRefused(what, `${what}: scheme ${quote(scheme.slice(0, -1))} is not allowed (use https, http, ssh or git)`);
  }
  if (!parsed.host) throw new SourceRefused(what, `${what} names no host`);
  if (parsed.host.startsWith('-')) throw new SourceRefused(what, `${what}: host ${quote(parsed.host)} looks like a command-line option and is refused`, parsed.host);
  if (!isIP(parsed.host) && !/^[a-z0-9_.-]+$/i.test(parsed.host)) throw new SourceRefused(what, `${what}: host ${quote(parsed.host)} is not a valid host name`, parsed.host);
  checkFetchUrl(raw, what, opts);
}

/** An HTTP(S) URL for a download or an OTS secret: the only schemes fetch() itself speaks. */
export function checkHttpUrl(raw: string, what: string, opts: { showPath?: boolean } = {}): void {
  checkSourceUrl(raw, what, false, opts);
  if (!/^https?:\/\//i.test(raw)) throw new SourceRefused(what, `${what}: only http and https URLs can be fetched`);
}

/** A download URL: http(s), or with IMGBUILDER_ALLOW_LOCAL_SOURCES a file:// URL / local path read from disk. */
export function checkDownloadUrl(raw: string, what: string, allowLocal: boolean): void {
  if (allowLocal && parseSourceUrl(raw).kind === 'local') return;
  checkHttpUrl(raw, what);
}

/** Removes `user:password@` from URLs in free text (log lines, error messages). */
export function stripUrlCredentials(text: string): string {
  // A scheme is tried only from the first letter of a run of scheme characters (the leftmost start, where a match
  // would begin anyway): trying every letter made a long run of letters (a base64 line in a build log) quadratic.
  return text.replace(/(?=[a-z])(?<![a-z][a-z0-9+.-]*?)([a-z][a-z0-9+.-]*:\/\/)[^@/\s]+@/gi, '$1***@');
}

/**
 * `custom_config` keys a git initializer may set. Git config can run programs (core.sshCommand, core.fsmonitor,
 * filter drivers, credential helpers, hooks), read local files (include.path, http.cookieFile) or redirect the fetch
 * past the URL policy (url.*.insteadOf, protocol.*.allow, http.proxy): on a shared worker only settings that shape
 * the checkout or the HTTP exchange with the user's own server are accepted.
 */
const GIT_CONFIG_ALLOWED = new Set([
  'core.autocrlf',
  'core.eol',
  'core.safecrlf',
  'core.symlinks',
  'core.ignorecase',
  'core.filemode',
  'core.precomposeunicode',
  'core.longpaths',
  'core.quotepath',
  'core.bigfilethreshold',
  'core.compression',
  'http.extraheader',
  'http.sslverify',
  'http.version',
  'http.postbuffer',
  'http.lowspeedlimit',
  'http.lowspeedtime',
  'http.useragent',
  'fetch.fsckobjects',
  'fetch.unpacklimit',
  'transfer.fsckobjects',
  'pack.threads',
  'pack.windowmemory',
  'gc.auto',
  'checkout.workers',
  'user.name',
  'user.email',
  'init.defaultbranch',
  'feature.manyfiles',
  'index.version',
]);
const GIT_CONFIG_ALLOWED_SECTIONS = new Set(['advice', 'color', 'i18n']);

/** Keys whose values are credentials more often than not: redacted from logs like passwords. */
export const SECRET_GIT_CONFIG = /^http\.(.*\.)?extraheader$/i;

/** Refuses custom_config keys outside the allow-list (see GIT_CONFIG_ALLOWED). */
export function checkGitConfig(config: Record<string, string> | undefined): void {
  for (const [key, value] of Object.entries(config ?? {})) {
    const m = /^([A-Za-z][A-Za-z0-9-]*)(?:\.(.+))?\.([A-Za-z][A-Za-z0-9-]*)$/s.exec(key);
    if (!m) throw new SourceRefused('git custom_config', `git custom_config key ${quote(key)} is not a valid git config key`);
    if (value.includes('\0')) throw new SourceRefused('git custom_config', `git custom_config value of ${quote(key)} contains a NUL byte`);
    const [, section, sub, name] = m;
    const s = section.toLowerCase();
    // `http.<url>.<key>` scopes a setting to one URL; the setting decides.
    const plain = `${s}.${name.toLowerCase()}`;
    const ok = (sub === undefined || s === 'http') && (GIT_CONFIG_ALLOWED.has(plain) || GIT_CONFIG_ALLOWED_SECTIONS.has(s));
    if (!ok) {
      throw new SourceRefused('git custom_config',
        `git custom_config key ${quote(key)} is not allowed: settings that run programs, read local files or redirect the fetch are refused on a shared builder (allowed: ${[...GIT_CONFIG_ALLOWED].join(', ')}, advice.*, color.*, i18n.*)`,
      );
    }
  }
}

/**
 * True when a path has a `.git` part. Git reads its config, hooks and attributes from there, so a `.git` written by
 * a download or a snapshot would make a later checkout run the writer's programs on the worker. Any case counts:
 * git itself treats `.GIT` alike on case-insensitive file systems.
 */
export function hasGitPart(path: string): boolean {
  return path.split(/[\\/]/).some((part) => part.toLowerCase() === '.git');
}

/** Where snapshots may be read from: the service's own upload prefix, plus IMGBUILDER_SNAPSHOT_SOURCES. */
export interface SnapshotPolicy {
  /** IMGBUILDER_S3_BUCKET: its `snapshots/` prefix is where the upload service stores snapshots. */
  ownBucket: string;
  /** IMGBUILDER_SNAPSHOT_SOURCES entries: `bucket` (any key) or `bucket/prefix`. */
  sources: readonly string[];
}

/** The prefix of the service's own bucket that CLI uploads go to (see upload-service.ts). */
export const OWN_SNAPSHOT_PREFIX = 'snapshots/';

/** Where a snapshot name points: `s3://bucket/key`, or a key in the default bucket. */
export function snapshotLocation(name: string, defaultBucket: string): { bucket: string; key: string } {
  const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(name);
  return m ? { bucket: m[1], key: m[2] } : { bucket: defaultBucket, key: name };
}

/**
 * The bucket and key of a snapshot the policy allows; refuses anything else. The worker reads snapshots with its
 * own credentials and `COPY . /x` publishes what it read, so an open choice of bucket would publish any object the
 * worker can read (build logs of others included).
 */
export function checkSnapshotSource(name: string, policy: SnapshotPolicy): { bucket: string; key: string } {
  if (/^s3:/i.test(name) && !/^s3:\/\/[^/]+\/.+$/.test(name)) throw new SourceRefused('snapshot', `snapshot ${quote(name)} must be s3://bucket/key or a key in the default bucket`);
  const loc = snapshotLocation(name, policy.ownBucket);
  // Stores that map keys to files (s3rver, some gateways) would resolve `..`; no key needs such parts.
  if (loc.key.split('/').some((p) => p === '' || p === '.' || p === '..')) throw new SourceRefused('snapshot', `snapshot ${quote(name)}: empty, "." and ".." parts are refused in snapshot keys`);
  if (loc.bucket === policy.ownBucket && loc.key.startsWith(OWN_SNAPSHOT_PREFIX)) return loc;
  const listed = policy.sources.some((entry) => {
    const i = entry.indexOf('/');
    if (i < 0) return entry === loc.bucket && !(loc.bucket === policy.ownBucket && loc.key.startsWith(LOG_KEY_PREFIX));
    const prefix = entry.slice(i + 1).replace(/\/*$/, '/');
    return entry.slice(0, i) === loc.bucket && (prefix === '/' || loc.key.startsWith(prefix));
  });
  if (listed) return loc;
  throw new SourceRefused('snapshot',
    `snapshot ${quote(name)} is refused: snapshots are read from ${OWN_SNAPSHOT_PREFIX} in the service's own bucket (where uploads go) or from buckets the operator lists in IMGBUILDER_SNAPSHOT_SOURCES`,
  );
}
