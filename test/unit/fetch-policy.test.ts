import { describe, expect, it } from 'vitest';
import { FetchRefused } from '@imgbuilder/common/errors';
import { loadEnv } from '@imgbuilder/common/config';
import { FetchPolicy, fetchTargetOf, pinnedLookup, registryTarget, type LookupAll } from '@imgbuilder/common/fetch-policy';

const defaults = new FetchPolicy();
const refused = (p: FetchPolicy, address: string, port = 80) => expect(p.refusal(address, port), `${address}:${port}`).toBeDefined();
const allowed = (p: FetchPolicy, address: string, port = 80) => expect(p.refusal(address, port), `${address}:${port}`).toBeUndefined();

/** A resolver answering from a table; names not in it do not resolve. */
const dns = (answers: Record<string, string[]>): LookupAll => async (host) => {
  if (!answers[host]) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  return answers[host].map((address) => ({ address }));
};
const target = (url: string) => fetchTargetOf(url, 'download url');

describe('fetch policy: addresses refused by default', () => {
  it('refuses loopback, unspecified, link-local and metadata addresses; private and public ones pass', () => {
    for (const a of ['127.0.0.1', '127.3.2.1', '::1', '0.0.0.0', '0.1.2.3', '::', '169.254.169.254', '169.254.0.1', 'fe80::1', 'fd00:ec2::254', '168.63.129.16']) refused(defaults, a);
    for (const a of ['10.0.0.1', '172.16.5.4', '192.168.1.1', '100.64.0.1', 'fd00::1', 'fd00:ec2::253', '8.8.8.8', '2001:db8::1', '168.63.129.17']) allowed(defaults, a);
  });

  it('judges IPv4-mapped, NAT64 and IPv4-compatible spellings by the IPv4 address inside', () => {
    for (const a of ['::ffff:127.0.0.1', '::ffff:7f00:1', '[::ffff:7f00:1]', '64:ff9b::7f00:1', '64:ff9b::127.0.0.1', '::7f00:1', '::ffff:a9fe:a9fe', '64:ff9b::a9fe:a9fe', '::ffff:168.63.129.16', '::ffff:0:0']) refused(defaults, a);
    for (const a of ['::ffff:10.0.0.1', '64:ff9b::808:808']) allowed(defaults, a);
    expect(defaults.refusal('64:ff9b::7f00:1', 80)).toBe('64:ff9b::7f00:1 is loopback');
    expect(defaults.refusal('::1', 80)).toBe('::1 is loopback');
  });
});

describe('fetch policy: IMGBUILDER_FETCH_DENY and IMGBUILDER_FETCH_ALLOW', () => {
  it('DENY adds CIDRs, in every spelling of their addresses', () => {
    const p = new FetchPolicy({ deny: ['10.96.0.0/12', 'fd12::/16'] });
    for (const a of ['10.96.0.1', '10.111.255.255', '::ffff:10.96.0.1', '64:ff9b::a60:1', 'fd12::7']) refused(p, a);
    for (const a of ['10.95.255.255', '10.112.0.0', 'fd13::1']) allowed(p, a);
    expect(p.refusal('10.96.0.1', 6379)).toBe('10.96.0.1 is in IMGBUILDER_FETCH_DENY');
  });

  it('ALLOW re-allows a CIDR or an address, over the defaults and DENY', () => {
    const p = new FetchPolicy({ allow: ['127.0.0.0/8', '::1', '10.96.0.10'], deny: ['10.96.0.0/12'] });
    for (const a of ['127.0.0.1', '127.9.9.9', '::1', '::ffff:127.0.0.1', '10.96.0.10']) allowed(p, a);
    for (const a of ['10.96.0.11', '169.254.169.254']) refused(p, a);
  });

  it('ALLOW host:port re-allows that port only, by address or by the name the URL uses', async () => {
    const p = new FetchPolicy({ allow: ['127.0.0.1:8080', '[::1]:9418', 'git.internal:22'] });
    allowed(p, '127.0.0.1', 8080);
    refused(p, '127.0.0.1', 8081);
    allowed(p, '::1', 9418);
    refused(p, '::1', 22);
    const lookup = dns({ 'git.internal': ['127.0.0.1'], 'other.internal': ['127.0.0.1'] });
    await expect(p.resolve(fetchTargetOf('ssh://git@git.internal/team/x.git', 'git remote_uri'), lookup)).resolves.toEqual({ address: '127.0.0.1', family: 4 });
    await expect(p.resolve(fetchTargetOf('https://git.internal/x', 'git remote_uri'), lookup)).rejects.toThrowError(FetchRefused);
    await expect(p.resolve(fetchTargetOf('ssh://git@other.internal/x', 'git remote_uri'), lookup)).rejects.toThrowError(FetchRefused);
    // A name that resolves to a listed address:port passes as the address would.
    await expect(p.resolve(target('http://other.internal:8080/x'), lookup)).resolves.toMatchObject({ address: '127.0.0.1' });
  });

  it('the installation\'s own registries are always reachable, on their port (or any, when the repository names none)', async () => {
    const p = FetchPolicy.fromEnv({
      IMGBUILDER_FETCH_ALLOW: [],
      IMGBUILDER_FETCH_DENY: ['10.0.0.0/8'],
      IMGBUILDER_BASE_REPOSITORY: '127.0.0.1:5000/imgbuilder/base',
      IMGBUILDER_WORKSPACE_REPOSITORY: 'registry.internal/imgbuilder/workspace',
      IMGBUILDER_CACHE_REPOSITORY: 'team/cache',
    });
    allowed(p, '127.0.0.1', 5000);
    refused(p, '127.0.0.1', 5001);
    const lookup = dns({ 'registry.internal': ['10.1.2.3'], team: ['127.0.0.1'] });
    await expect(p.resolve(registryTarget('registry.internal', 'registry'), lookup)).resolves.toMatchObject({ address: '10.1.2.3' });
    await expect(p.resolve(registryTarget('registry.internal:8443', 'registry'), lookup)).resolves.toMatchObject({ address: '10.1.2.3' });
    // `team/cache` is a Docker Hub repository: "team" is no host of ours.
    await expect(p.resolve(registryTarget('team', 'registry'), lookup)).rejects.toThrowError(FetchRefused);
  });

  it('the configuration refuses entries that are no CIDR, address or host:port, naming the variable', () => {
    const key = Buffer.alloc(32, 1).toString('base64');
    expect(() => loadEnv({ IMGBUILDER_SECRET_KEY: key, IMGBUILDER_FETCH_DENY: '10.0.0.0/33' })).toThrow(/IMGBUILDER_FETCH_DENY.*10\.0\.0\.0\/33/);
    expect(() => loadEnv({ IMGBUILDER_SECRET_KEY: key, IMGBUILDER_FETCH_DENY: 'redis:6379' })).toThrow(/IMGBUILDER_FETCH_DENY/);
    expect(() => loadEnv({ IMGBUILDER_SECRET_KEY: key, IMGBUILDER_FETCH_ALLOW: 'git.internal' })).toThrow(/IMGBUILDER_FETCH_ALLOW/);
    const env = loadEnv({ IMGBUILDER_SECRET_KEY: key, IMGBUILDER_FETCH_ALLOW: '127.0.0.1:8080, 10.0.0.0/8,git.internal:22', IMGBUILDER_FETCH_DENY: '172.30.213.0/24' });
    expect(env.IMGBUILDER_FETCH_ALLOW).toEqual(['127.0.0.1:8080', '10.0.0.0/8', 'git.internal:22']);
    expect(env.IMGBUILDER_FETCH_DENY).toEqual(['172.30.213.0/24']);
  });
});

describe('fetch policy: host names, after DNS', () => {
  const lookup = dns({ localhost: ['127.0.0.1', '::1'], 'rebind.test': ['127.0.0.1', '93.184.216.34'], 'meta.test': ['169.254.169.254'], 'git.test': ['10.0.0.7'] });

  it('localhost is loopback: refused with a message naming the URL, the address and IMGBUILDER_FETCH_ALLOW', async () => {
    const err = await defaults.resolve(target('http://user:token@localhost:2375/images/x/get?sig=secret#f'), lookup).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FetchRefused);
    expect((err as FetchRefused).message).toBe(
      'download url: http://localhost:2375/images/x/get is refused by the fetch policy (localhost resolves to 127.0.0.1, ::1; 127.0.0.1 is loopback; IMGBUILDER_FETCH_ALLOW re-allows an address, a CIDR or a host:port)',
    );
  });

  it('connects only to an allowed address of a name: a loopback answer beside a public one is skipped', async () => {
    await expect(defaults.resolve(target('https://rebind.test/x'), lookup)).resolves.toEqual({ address: '93.184.216.34', family: 4 });
    await expect(defaults.resolve(target('https://git.test/x'), lookup)).resolves.toEqual({ address: '10.0.0.7', family: 4 });
    await expect(defaults.resolve(target('https://meta.test/x'), lookup)).rejects.toThrow(/169\.254\.169\.254 is link-local/);
  });

  it('check() lets a name that does not resolve pass (the fetch fails with its own error); resolve() rejects', async () => {
    await expect(defaults.check(target('https://nowhere.test/x'), lookup)).resolves.toBeUndefined();
    await expect(defaults.resolve(target('https://nowhere.test/x'), lookup)).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await expect(defaults.check(target('https://meta.test/x'), lookup)).rejects.toThrowError(FetchRefused);
  });

  it('literal spellings getaddrinfo reads as IPv4 are judged as the address', async () => {
    for (const url of ['git://2130706433/x', 'ssh://0x7f.1/x', 'http://0177.0.0.1/x', 'git@127.1:x.git']) {
      const t = fetchTargetOf(url, 'git remote_uri');
      expect(() => defaults.checkLiteral(t), url).toThrowError(FetchRefused);
    }
  });
});

describe('fetch targets and pinned connections', () => {
  it('shows URLs without credentials, query or fragment, and with showPath: false without the path', () => {
    expect(target('https://u:p@example.com/a/b?token=x#y')).toEqual({ host: 'example.com', port: 443, what: 'download url', shown: 'https://example.com/a/b' });
    expect(fetchTargetOf('https://ots.example.com/api/ots/get/SECRET', 'git auth_ots', { showPath: false }).shown).toBe('https://ots.example.com');
    expect(fetchTargetOf('git://[::1]/x', 'git remote_uri')).toMatchObject({ host: '::1', port: 9418 });
    expect(fetchTargetOf('git@github.com:a/b.git', 'git remote_uri')).toMatchObject({ host: 'github.com', port: 22, shown: 'ssh://github.com' });
    expect(registryTarget('[::1]:5000', 'registry')).toMatchObject({ host: '::1', port: 5000 });
  });

  it('pinnedLookup answers with the checked address, whatever name is asked', () => {
    const lookup = pinnedLookup('10.0.0.7', 4);
    const one: unknown[] = [];
    const all: unknown[] = [];
    lookup('evil.test', {}, (...args) => one.push(...args));
    lookup('evil.test', { all: true }, (...args) => all.push(...args));
    expect(one).toEqual([null, '10.0.0.7', 4]);
    expect(all).toEqual([null, [{ address: '10.0.0.7', family: 4 }]]);
  });
});
