import { lookup as dnsLookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { FetchRefused } from './errors.js';

/**
 * The one fetch policy: which addresses imgbuilder connects to when it fetches on a build's behalf (git remotes,
 * downloads, one-time secrets, registries, and what the Dockerfile names). A build step's own traffic is the
 * sandbox's business (infra/engine/egress-policy.sh); this governs the API and the worker, which sit next to the
 * engine's API, Redis and the object store. Checks run on addresses, after DNS and on every redirect, and the
 * connection goes to the address checked (pinnedLookup, fetch-proxy.ts): a DNS answer that changes in between
 * gains nothing.
 */

/** Refused unless IMGBUILDER_FETCH_ALLOW re-allows them: the host itself, link-local and cloud metadata endpoints. */
const REFUSED_BY_DEFAULT: readonly { cidr: string; what: string }[] = [
  { cidr: '127.0.0.0/8', what: 'loopback' },
  { cidr: '::1/128', what: 'loopback' },
  // 0.0.0.0 reaches the local host on Linux; the rest of 0.0.0.0/8 is "this network".
  { cidr: '0.0.0.0/8', what: 'unspecified' },
  { cidr: '::/128', what: 'unspecified' },
  { cidr: '169.254.0.0/16', what: 'link-local, where cloud metadata endpoints live' },
  { cidr: 'fe80::/10', what: 'link-local' },
  { cidr: 'fd00:ec2::254/128', what: 'a cloud metadata endpoint (AWS)' },
  { cidr: '168.63.129.16/32', what: 'a cloud platform endpoint (Azure)' },
];
const DEFAULT_RULES = REFUSED_BY_DEFAULT.map((r) => ({ what: r.what, list: blockList([r.cidr]) }));

/** IPv6 spellings that carry an IPv4 address in their last 32 bits: mapped, NAT64 (RFC 6052) and compatible. */
const EMBEDDING_V4 = blockList(['::ffff:0:0/96', '64:ff9b::/96', '::/96']);

/** Default ports of the schemes fetched, for host:port entries. */
const DEFAULT_PORTS: Record<string, number> = { 'http:': 80, 'https:': 443, 'git:': 9418, 'ssh:': 22 };

export const FETCH_ALLOW_HINT = 'IMGBUILDER_FETCH_ALLOW re-allows an address, a CIDR or a host:port';

function blockList(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const cidr of cidrs) {
    const [address, bits] = cidr.split('/');
    const a = bare(address);
    const family = isIP(a);
    const prefix = bits === undefined ? (family === 4 ? 32 : 128) : Number(bits);
    if (!family || !/^\d{1,3}$/.test(bits ?? '0') || prefix > (family === 4 ? 32 : 128)) throw new Error(`"${cidr}" is not a CIDR (10.0.0.0/8, fd00::/8) or an address`);
    list.addSubnet(a, prefix, family === 4 ? 'ipv4' : 'ipv6');
  }
  return list;
}

/** An address or host as compared: lower case, without brackets or an IPv6 zone. */
function bare(host: string): string {
  return host.toLowerCase().replace(/^\[|\]$/g, '').replace(/%.*$/, '');
}

/** The eight 16-bit groups of an IPv6 address. */
function groups(v6: string): number[] {
  let s = v6;
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number);
    s = `${s.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = s.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const all = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return all.map((g) => parseInt(g, 16));
}

/** The address the rules judge: the IPv4 inside a mapped / NAT64 / compatible IPv6 spelling, else the address. */
function effective(address: string): { address: string; family: 'ipv4' | 'ipv6' } | undefined {
  const a = bare(address);
  const family = isIP(a);
  if (family === 4) return { address: a, family: 'ipv4' };
  if (family !== 6) return undefined;
  // :: and ::1 are themselves, not 0.0.0.0 and 0.0.0.1.
  if (EMBEDDING_V4.check(a, 'ipv6') && a !== '::' && a !== '::1') {
    const g = groups(a);
    return { address: `${g[6] >> 8}.${g[6] & 255}.${g[7] >> 8}.${g[7] & 255}`, family: 'ipv4' };
  }
  return { address: a, family: 'ipv6' };
}

/**
 * Canonical form of a host as the resolver sees it: `2852039166` and `0xa9.0xfe.0xa9.0xfe` are IPv4 literals to
 * getaddrinfo, but URLs with ssh:// or git:// keep them opaque; parsing as http normalises them.
 */
export function canonicalHost(host: string): string {
  const h = bare(host);
  try {
    return bare(new URL(`http://${isIP(h) === 6 ? `[${h}]` : h}/`).hostname);
  } catch {
    return h;
  }
}

/** `host:port` as the allow list keys it. */
function hostPortKey(host: string, port: number | string): string {
  return `${bare(host)}:${port}`;
}

export interface FetchPolicyOptions {
  /** IMGBUILDER_FETCH_ALLOW: addresses, CIDRs, or `host:port` (a host name as URLs write it, or an address). */
  allow?: readonly string[];
  /** IMGBUILDER_FETCH_DENY: CIDRs refused besides the defaults (the cluster's pod and service ranges). */
  deny?: readonly string[];
  /** `host[:port]` of the installation's own registries: always reachable, by name or by address. */
  ownRegistries?: readonly string[];
}

/** Where a fetch goes, and how messages name it. */
export interface FetchTarget {
  host: string;
  port: number;
  /** What is fetched, as the request names it ("download of Dockerfile", "git remote_uri"). */
  what: string;
  /** The URL shown in messages: never credentials, a query or a fragment (they often carry tokens). */
  shown: string;
}

export type LookupAll = (host: string) => Promise<{ address: string; family?: number }[]>;

const systemLookup: LookupAll = (host) => dnsLookup(host, { all: true, verbatim: true });

export class FetchPolicy {
  private readonly allowNets: BlockList;
  private readonly deny: BlockList;
  /** `host:port` keys that are always reachable: IMGBUILDER_FETCH_ALLOW's and the own registries'. */
  private readonly allowHostPorts = new Set<string>();
  /** Own registries named without a port: reachable on any port. */
  private readonly ownHosts = new Set<string>();

  constructor(o: FetchPolicyOptions = {}) {
    const nets: string[] = [];
    for (const entry of o.allow ?? []) {
      const hp = /^(\[[^\]]+\]|[^:/\s]+):(\d{1,5})$/.exec(entry.trim());
      if (hp) this.allowHostPorts.add(hostPortKey(hp[1], hp[2]));
      else nets.push(entry.trim());
    }
    this.allowNets = blockList(nets);
    this.deny = blockList((o.deny ?? []).map((e) => e.trim()));
    for (const entry of o.ownRegistries ?? []) {
      const hp = /^(\[[^\]]+\]|[^:/\s]+)(?::(\d{1,5}))?$/.exec(entry.trim());
      if (!hp) continue;
      if (hp[2]) this.allowHostPorts.add(hostPortKey(hp[1], hp[2]));
      else this.ownHosts.add(bare(hp[1]));
    }
  }

  /** The policy of IMGBUILDER_FETCH_ALLOW / _DENY, with the hosts of the base, workspace and cache repositories. */
  static fromEnv(env: {
    IMGBUILDER_FETCH_ALLOW: readonly string[];
    IMGBUILDER_FETCH_DENY: readonly string[];
    IMGBUILDER_BASE_REPOSITORY: string;
    IMGBUILDER_WORKSPACE_REPOSITORY: string;
    IMGBUILDER_CACHE_REPOSITORY?: string;
  }): FetchPolicy {
    const repositories = [env.IMGBUILDER_BASE_REPOSITORY, env.IMGBUILDER_WORKSPACE_REPOSITORY, env.IMGBUILDER_CACHE_REPOSITORY ?? ''];
    // A first part without a dot, colon or "localhost" is a Docker Hub namespace, not a host.
    const hosts = repositories.map((r) => r.split('/')[0]).filter((h) => /[.:]/.test(h) || h === 'localhost');
    return new FetchPolicy({ allow: env.IMGBUILDER_FETCH_ALLOW, deny: env.IMGBUILDER_FETCH_DENY, ownRegistries: hosts });
  }

  /** True when `host` (as the URL names it) on `port` is listed by name: reachable whatever it resolves to. */
  private listed(host: string, port: number): boolean {
    return this.ownHosts.has(bare(host)) || this.allowHostPorts.has(hostPortKey(host, port));
  }

  /** Why connecting to `address`:`port` is refused, or undefined when it is allowed. */
  refusal(address: string, port: number): string | undefined {
    const e = effective(address);
    if (!e) return `${address} is not an IP address`;
    if (this.ownHosts.has(e.address) || this.allowHostPorts.has(hostPortKey(e.address, port)) || this.allowHostPorts.has(hostPortKey(address, port))) return undefined;
    if (this.allowNets.check(e.address, e.family)) return undefined;
    const rule = DEFAULT_RULES.find((r) => r.list.check(e.address, e.family));
    if (rule) return `${bare(address)} is ${rule.what}`;
    if (this.deny.check(e.address, e.family)) return `${bare(address)} is in IMGBUILDER_FETCH_DENY`;
    return undefined;
  }

  /** Refuses a target whose host is an address literal the policy refuses; host names wait for resolve(). */
  checkLiteral(t: FetchTarget): void {
    const host = canonicalHost(t.host);
    if (!isIP(host) || this.listed(host, t.port)) return;
    const why = this.refusal(host, t.port);
    if (why) throw refused(t, host, why);
  }

  /**
   * The address to connect to: the target's first address the policy allows. A host name none of whose addresses
   * is allowed is refused; `localhost` is loopback like 127.0.0.1. DNS failures reject with the resolver's error.
   */
  async resolve(t: FetchTarget, lookup: LookupAll = systemLookup): Promise<{ address: string; family: 4 | 6 }> {
    const host = canonicalHost(t.host);
    if (isIP(host)) {
      this.checkLiteral({ ...t, host });
      return { address: host, family: isIP(host) as 4 | 6 };
    }
    const answers = await lookup(host);
    if (this.listed(host, t.port) && answers.length) return { address: answers[0].address, family: isIP(answers[0].address) as 4 | 6 };
    const ok = answers.find((a) => !this.refusal(a.address, t.port));
    if (ok) return { address: ok.address, family: isIP(ok.address) as 4 | 6 };
    const first = answers[0];
    if (!first) throw Object.assign(new Error(`${host} has no address`), { code: 'ENOTFOUND' });
    const list = answers.map((a) => a.address).join(', ');
    throw refused(t, first.address, `${host} resolves to ${list}; ${this.refusal(first.address, t.port)}`);
  }

  /** Like resolve(), but a name that does not resolve passes: the fetch itself then fails with a clearer error. */
  async check(t: FetchTarget, lookup: LookupAll = systemLookup): Promise<void> {
    await this.resolve(t, lookup).catch((err: unknown) => {
      if (err instanceof FetchRefused) throw err;
    });
  }
}

function refused(t: FetchTarget, address: string, why: string): FetchRefused {
  return new FetchRefused(t.what, t.shown, address, `${t.what}: ${t.shown} is refused by the fetch policy (${why}; ${FETCH_ALLOW_HINT})`);
}

/** Characters of a URL shown in a message: status messages stay short (client-text.ts). */
const SHOWN_MAX = 200;

/**
 * Where a URL fetches from. `showPath: false` shows the origin alone, for URLs whose path is a secret (one-time
 * secret URLs). Scp-like `user@host:path` remotes are ssh on port 22.
 */
export function fetchTargetOf(url: string, what: string, opts: { showPath?: boolean } = {}): FetchTarget {
  const scp = /^(?:[^@/\s]+@)?(\[[^\]]+\]|[^:/\s]+):(?!\/\/)/.exec(url);
  if (scp && !/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) return { host: canonicalHost(scp[1]), port: 22, what, shown: `ssh://${scp[1]}` };
  const u = new URL(url);
  const port = u.port ? Number(u.port) : (DEFAULT_PORTS[u.protocol] ?? 0);
  const path = opts.showPath === false ? '' : u.pathname;
  const shown = `${u.protocol}//${u.host}${path}`;
  return { host: canonicalHost(u.hostname), port, what, shown: shown.length > SHOWN_MAX ? `${shown.slice(0, SHOWN_MAX)}…` : shown };
}

/** A registry `host[:port]` (an image ref's domain): HTTPS unless the port says otherwise. */
export function registryTarget(hostPort: string, what: string): FetchTarget {
  const m = /^(\[[^\]]+\]|[^:/\s]+)(?::(\d{1,5}))?$/.exec(hostPort);
  return { host: bare(m?.[1] ?? hostPort), port: m?.[2] ? Number(m[2]) : 443, what, shown: hostPort };
}

let current = new FetchPolicy();

/** Sets the policy of this process (main() does, from the environment); until then only the defaults apply. */
export function installFetchPolicy(policy: FetchPolicy): void {
  current = policy;
}

/** The policy of this process. */
export function fetchPolicy(): FetchPolicy {
  return current;
}

/** Refuses an http(s)/git/ssh URL whose host is a refused address literal (no DNS; see resolveFetchUrl). */
export function checkFetchUrl(url: string, what: string, opts: { showPath?: boolean } = {}): void {
  current.checkLiteral(fetchTargetOf(url, what, opts));
}

/** After DNS: refuses a URL whose host has no allowed address; a name that does not resolve passes. */
export function checkResolvedUrl(url: string, what: string, opts: { showPath?: boolean; lookup?: LookupAll } = {}): Promise<void> {
  return current.check(fetchTargetOf(url, what, opts), opts.lookup);
}

/** For the Dockerfile's images: refuses a registry `host[:port]` the policy refuses, by literal or DNS answer. */
export function checkRegistryHost(hostPort: string, what: string, lookup?: LookupAll): Promise<void> {
  return current.check(registryTarget(hostPort, what), lookup);
}

/**
 * A `lookup` for node:http/https and net.connect that answers with an address already checked, so the connection
 * goes exactly there, whatever DNS says by then.
 */
export function pinnedLookup(address: string, family: 4 | 6) {
  return (_host: string, options: { all?: boolean } | number, callback: (err: NodeJS.ErrnoException | null, address: string | { address: string; family: number }[], family?: number) => void): void => {
    if (typeof options === 'object' && options.all) callback(null, [{ address, family }]);
    else callback(null, address, family);
  };
}
