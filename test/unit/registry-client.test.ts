import { afterEach, describe, expect, it } from 'vitest';
import { parseImageRef } from '@imgbuilder/common/image-ref';
import { parseChallenge, RegistryClient } from '@imgbuilder/common/registry-client';
import { FakeRegistry } from '../support/fake-registry.js';
import { allowTestServers } from '../../testkit/fetch-allow.js';

allowTestServers();

describe('parseChallenge (WWW-Authenticate)', () => {
  it('Bearer with realm, service and scope', () => {
    expect(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"')).toEqual({
      scheme: 'bearer',
      params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull' },
    });
  });

  it('keeps commas and escaped quotes inside quoted values', () => {
    const c = parseChallenge('Bearer realm="https://r.example.com/token?a=1,b=2", scope="repository:team/app:pull,push", error="say \\"hi\\""');
    expect(c).toEqual({ scheme: 'bearer', params: { realm: 'https://r.example.com/token?a=1,b=2', scope: 'repository:team/app:pull,push', error: 'say "hi"' } });
  });

  it('reads scheme and parameter names case-insensitively, spaces around = and bare token values', () => {
    expect(parseChallenge('BEARER Realm = "https://r.example.com/t" , SERVICE=registry.example.com')).toEqual({
      scheme: 'bearer',
      params: { realm: 'https://r.example.com/t', service: 'registry.example.com' },
    });
  });

  it('Basic, with or without a realm', () => {
    expect(parseChallenge('Basic realm="Registry Realm"')).toEqual({ scheme: 'basic' });
    expect(parseChallenge('basic')).toEqual({ scheme: 'basic' });
  });

  it('a second challenge in the header does not replace the first realm', () => {
    expect(parseChallenge('Bearer realm="https://a.example.com/token",service="a", Basic realm="b"')).toMatchObject({ params: { realm: 'https://a.example.com/token', service: 'a' } });
  });

  it('malformed or unknown: undefined, or Bearer without a realm (the caller then sends no credentials)', () => {
    for (const h of ['', '   ', 'Digest realm="x", nonce="y"', 'Negotiate', 'Basicrealm="x"', '="x"', 'realm="x"']) expect(parseChallenge(h), h).toBeUndefined();
    expect(parseChallenge('Bearer')).toEqual({ scheme: 'bearer', params: {} });
    expect(parseChallenge('Bearer realm="https://r.example.com/token')).toEqual({ scheme: 'bearer', params: {} });
    expect(parseChallenge('Bearer realm="https://r.example.com/token, service=s')).toEqual({ scheme: 'bearer', params: { service: 's' } });
  });
});

describe('RegistryClient token and Basic caches', () => {
  const DIGEST = `sha256:${'d'.repeat(64)}`;
  const manifest = { 'content-type': 'application/vnd.docker.distribution.manifest.v2+json', 'docker-content-digest': DIGEST };
  const basic = (u: string, p: string) => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;
  let registry: FakeRegistry | undefined;
  afterEach(() => registry?.stop());

  /** A registry with a Bearer token service that issues one token per user. */
  async function bearerRegistry(): Promise<FakeRegistry> {
    const r = await FakeRegistry.start((req, reply) => {
      if (req.path.startsWith('/token')) {
        const user = req.headers.authorization === basic('alice', 'pw-a') ? 'alice' : req.headers.authorization === basic('bob', 'pw-b') ? 'bob' : undefined;
        if (!user) return reply(401);
        return reply(200, { 'content-type': 'application/json' }, JSON.stringify({ token: `tok-${user}`, expires_in: 300 }));
      }
      if (req.headers.authorization === 'Bearer tok-alice' || req.headers.authorization === 'Bearer tok-bob') return reply(200, manifest);
      reply(401, { 'www-authenticate': `Bearer realm="http://${r.host}/token",service="fake",scope="repository:team/app:pull,push"` });
    });
    return r;
  }

  it('reuses a Bearer token for the same credentials and asks again for others', async () => {
    const r = (registry = await bearerRegistry());
    const client = new RegistryClient();
    const ref = parseImageRef(`${r.host}/team/app:latest`);
    const alice = { username: 'alice', password: 'pw-a' };
    expect(await client.resolveDigest(ref, { credentials: alice })).toBe(DIGEST);
    expect(await client.resolveDigest(ref, { credentials: alice })).toBe(DIGEST);
    const tokens = () => r.requests.filter((q) => q.path.startsWith('/token'));
    expect(tokens()).toHaveLength(1);
    // The challenge's quoted scope, comma and all, goes to the token service as given.
    expect(new URL(tokens()[0].path, 'http://x').searchParams.get('scope')).toBe('repository:team/app:pull,push');
    // The second lookup sent the cached token at once: no second 401.
    expect(r.requests.filter((q) => !q.path.startsWith('/token')).map((q) => q.headers.authorization ?? '')).toEqual(['', 'Bearer tok-alice', 'Bearer tok-alice']);

    // Another user, or alice's name with a guessed password, does not get alice's token.
    expect(await client.resolveDigest(ref, { credentials: { username: 'bob', password: 'pw-b' } })).toBe(DIGEST);
    await expect(client.resolveDigest(ref, { credentials: { username: 'alice', password: 'guess' } })).rejects.toThrow(/refused the credentials/);
    expect(tokens()).toHaveLength(3);
  });

  it('after one Basic challenge sends credentials at once', async () => {
    const r = (registry = await FakeRegistry.start((req, reply) => {
      if (req.headers.authorization === basic('u', 'pw')) return reply(200, manifest);
      reply(401, { 'www-authenticate': 'Basic realm="fake"' });
    }));
    const client = new RegistryClient();
    const ref = parseImageRef(`${r.host}/team/app:v1`);
    for (let i = 0; i < 2; i++) expect(await client.exists(ref, { credentials: { username: 'u', password: 'pw' } })).toBe(true);
    expect(r.requests.map((q) => q.headers.authorization ?? '')).toEqual(['', basic('u', 'pw'), basic('u', 'pw')]);
  });
});
