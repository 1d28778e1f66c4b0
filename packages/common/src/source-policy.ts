import { lookup as dnsLookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { AddressRefused, SourceRefused } from './errors.js';
import { quote } from './client-text.js';
import { LOG_KEY_PREFIX } from './log-store.js';

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
    if (scp && !/^[a-zA-Z]:[\\/]/.test(raw)) return { kind: 'scp', host: normaliseHost(scp[1].replace(/^\[|\]$/g, '')) };
    return { kind: 'local' };
  }
  const u = new URL(raw);
  return { kind: 'url', host: normaliseHost(u.hostname.replace(/^\[|\]$/g, '')) };
}

/**
 * Canonical form of a host as the resolver sees it: `2852039166` and `0xa9.0xfe.0xa9.0xfe` are IPv4 literals to
 * getaddrinfo, but URLs with ssh:// or git:// keep them opaque; parsing as http normalises them.
 */
function normaliseHost(host: string): string {
  try {
    return new URL(`http://${isIP(host) === 6 ? `[${host}]` : host}/`).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return host;
  }
}

/** Link-local (cloud metadata lives there) and unspecified addresses. Loopback and private ranges stay allowed. */
const FORBIDDEN = new BlockList();
FORBIDDEN.addSubnet('169.254.0.0', 16, 'ipv4');
FORBIDDEN.addAddress('0.0.0.0', 'ipv4');
FORBIDDEN.addSubnet('fe80::', 10, 'ipv6');
FORBIDDEN.addAddress('fd00:ec2::254', 'ipv6');
FORBIDDEN.addAddress('::', 'ipv6');
// NAT64 and IPv4-compatible spellings of 169.254.0.0/16.
FORBIDDEN.addSubnet('64:ff9b::a9fe:0', 112, 'ipv6');
FORBIDDEN.addSubnet('::a9fe:0', 112, 'ipv6');

/** Link-local and cloud metadata addresses: never fetched on a user's behalf. IPv4-mapped forms count too. */
export function isForbiddenAddress(address: string): boolean {
  const a = address.toLowerCase().replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const family = isIP(a);
  if (family === 4) return FORBIDDEN.check(a, 'ipv4');
  if (family === 6) return FORBIDDEN.check(a, 'ipv6');
  return false;
}

/**
 * Refuses URLs imgbuilder will not fetch: schemes other than https/http/ssh/git, git transport helpers, local paths
 * and file:// (unless allowed), option-like hosts, and link-local / metadata addresses written literally. Host names
 * are checked again after DNS (checkResolvedHost).
 */
export function checkSourceUrl(raw: string, what: string, allowLocal: boolean): void {
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
  if (isForbiddenAddress(parsed.host)) throw new SourceRefused(what, `${what}: address ${parsed.host} is link-local or a cloud metadata endpoint and is refused`, parsed.host);
}

/** An HTTP(S) URL for a download or an OTS secret: the only schemes fetch() itself speaks. */
export function checkHttpUrl(raw: string, what: string): void {
  checkSourceUrl(raw, what, false);
  if (!/^https?:\/\//i.test(raw)) throw new SourceRefused(what, `${what}: only http and https URLs can be fetched`);
}

/** A download URL: http(s), or with IMGBUILDER_ALLOW_LOCAL_SOURCES a file:// URL / local path read from disk. */
export function checkDownloadUrl(raw: string, what: string, allowLocal: boolean): void {
  if (allowLocal && parseSourceUrl(raw).kind === 'local') return;
  checkHttpUrl(raw, what);
}

export type LookupAll = (host: string) => Promise<{ address: string }[]>;

const systemLookup: LookupAll = (host) => dnsLookup(host, { all: true });

/** After DNS: a host name that resolves to a refused address is refused. `lookup` is injectable for tests. */
export async function checkResolvedHost(raw: string, what: string, lookup: LookupAll = systemLookup): Promise<void> {
  const parsed = parseSourceUrl(raw);
  if (!parsed.host || isIP(parsed.host)) return;
  let addresses: { address: string }[];
  try {
    addresses = await lookup(parsed.host);
  } catch {
    return; // Unresolvable: the fetch itself fails with a clearer error.
  }
  const bad = addresses.find((a) => isForbiddenAddress(a.address));
  if (bad) throw new AddressRefused(what, parsed.host, bad.address, `${what}: host ${parsed.host} resolves to ${bad.address}, a link-local or cloud metadata address; refused`);
}

/**
 * A `lookup` for node:http/https and net.connect that refuses link-local / metadata answers at connect time, so a
 * DNS answer that changes between the check and the connection (rebinding) gains nothing.
 */
export function guardedLookup(
  hostname: string,
  options: { all?: boolean; family?: number } | number,
  callback: (err: NodeJS.ErrnoException | null, address: string | { address: string; family: number }[], family?: number) => void,
): void {
  const opts = typeof options === 'number' ? { family: options } : options;
  dnsLookup(hostname, { all: true, family: opts.family as 0 | 4 | 6 | undefined }).then(
    (all) => {
      const bad = all.find((a) => isForbiddenAddress(a.address));
      if (bad) {
        const err = new Error(`host ${hostname} resolves to ${bad.address}, a link-local or cloud metadata address; refused`) as NodeJS.ErrnoException;
        err.code = 'EREFUSEDADDRESS';
        return callback(err, '', 0);
      }
      if (opts.all) return callback(null, all);
      callback(null, all[0].address, all[0].family);
    },
    (err: NodeJS.ErrnoException) => callback(err, '', 0),
  );
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
