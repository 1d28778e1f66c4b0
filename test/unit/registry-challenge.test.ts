import { describe, expect, it } from 'vitest';
import { parseChallenge } from '@imgbuilder/common/registry-client';

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
