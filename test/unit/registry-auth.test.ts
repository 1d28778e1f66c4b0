import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BuildRegistryAuth } from '@imgbuilder/proto';
import { decodeAdditional, loadCredentialFile, pushCredentials, RegistryAuthPolicy, registryAuthHint, type RegistryCredentials } from '@imgbuilder/common/registry-auth';

const b64 = (s: string) => Buffer.from(s).toString('base64');
const own = { baseRepository: 'registry.example.com/imgbuilder/base', workspaceRepository: 'ws.example.com:5000/imgbuilder/workspace' };
const installation = new Map<string, RegistryCredentials>([
  ['registry.example.com', { username: 'inst-base', password: 'inst-base-pw' }],
  ['ws.example.com:5000', { username: 'inst-ws', password: 'inst-ws-pw' }],
  ['private.example.com', { username: 'inst-private', password: 'inst-private-pw' }],
  ['docker.io', { username: 'inst-hub', password: 'inst-hub-pw', auth: b64('inst-hub:inst-hub-pw') }],
]);
const policy = (auth: Parameters<typeof BuildRegistryAuth.fromPartial>[0] | undefined) => new RegistryAuthPolicy(auth ? BuildRegistryAuth.fromPartial(auth) : undefined, installation, own);

describe('decodeAdditional (Gitpod decoding cases)', () => {
  it('myregistry.com:mytoken → user myregistry.com, password mytoken', () => {
    expect(decodeAdditional(b64('myregistry.com:mytoken'))).toEqual({ auth: b64('myregistry.com:mytoken'), username: 'myregistry.com', password: 'mytoken' });
  });

  it('myregistry.com:5000:mytoken → the user keeps everything before the last colon', () => {
    expect(decodeAdditional(b64('myregistry.com:5000:mytoken'))).toMatchObject({ username: 'myregistry.com:5000', password: 'mytoken' });
  });

  it('justauser (no colon) → passed on as the raw auth only', () => {
    expect(decodeAdditional(b64('justauser'))).toEqual({ auth: b64('justauser') });
  });

  it('empty → the raw (empty) auth only', () => {
    expect(decodeAdditional('')).toEqual({ auth: '' });
  });

  it('invalid base64 → the raw auth only', () => {
    expect(decodeAdditional('not base64!')).toEqual({ auth: 'not base64!' });
    expect(decodeAdditional('abc')).toEqual({ auth: 'abc' });
  });
});

describe('RegistryAuthPolicy', () => {
  it('nil auth: no installation credentials for any host', () => {
    const p = policy(undefined);
    for (const h of installation.keys()) expect(p.credentialsFor(h)).toBeUndefined();
    expect(p.pullCredentials().size).toBe(0);
  });

  it('total.allow_all: installation credentials for every host; allow_all=false allows none', () => {
    const all = policy({ mode: { $case: 'total', total: { allowAll: true } } });
    expect(all.credentialsFor('private.example.com')).toMatchObject({ username: 'inst-private' });
    expect(all.credentialsFor('docker.io')).toMatchObject({ username: 'inst-hub', password: 'inst-hub-pw' });
    expect(all.credentialsFor('unknown.example.com')).toBeUndefined();
    const none = policy({ mode: { $case: 'total', total: { allowAll: false } } });
    expect(none.credentialsFor('private.example.com')).toBeUndefined();
  });

  it('selective.allow_baserep allows only the base repository host', () => {
    const p = policy({ mode: { $case: 'selective', selective: { allowBaserep: true, allowWorkspacerep: false, anyOf: [] } } });
    expect(p.credentialsFor('registry.example.com')).toMatchObject({ username: 'inst-base' });
    expect(p.credentialsFor('ws.example.com:5000')).toBeUndefined();
    expect(p.credentialsFor('private.example.com')).toBeUndefined();
  });

  it('selective.allow_workspacerep allows only the workspace repository host (port included)', () => {
    const p = policy({ mode: { $case: 'selective', selective: { allowBaserep: false, allowWorkspacerep: true, anyOf: [] } } });
    expect(p.credentialsFor('ws.example.com:5000')).toMatchObject({ username: 'inst-ws' });
    expect(p.credentialsFor('ws.example.com')).toBeUndefined();
    expect(p.credentialsFor('registry.example.com')).toBeUndefined();
  });

  it('selective.any_of allows the hosts it lists, by host[:port]; Docker Hub aliases are one host', () => {
    const p = policy({ mode: { $case: 'selective', selective: { allowBaserep: false, allowWorkspacerep: false, anyOf: ['private.example.com', 'index.docker.io'] } } });
    expect(p.credentialsFor('private.example.com')).toMatchObject({ username: 'inst-private' });
    expect(p.credentialsFor('docker.io')).toMatchObject({ username: 'inst-hub' });
    expect(p.credentialsFor('registry.example.com')).toBeUndefined();
  });

  it('additional is the fallback where no installation credential applies, and never wins over an allowed one', () => {
    const additional = { 'private.example.com': b64('user:from-request'), 'other.example.com': b64('other:pw') };
    const notAllowed = policy({ additional });
    expect(notAllowed.credentialsFor('private.example.com')).toMatchObject({ username: 'user', password: 'from-request' });
    expect(notAllowed.credentialsFor('other.example.com')).toMatchObject({ username: 'other', password: 'pw' });
    const allowed = policy({ mode: { $case: 'total', total: { allowAll: true } }, additional });
    expect(allowed.credentialsFor('private.example.com')).toMatchObject({ username: 'inst-private' });
    expect(allowed.credentialsFor('other.example.com')).toMatchObject({ username: 'other' });
  });

  it('additional keyed by a Docker Hub alias applies to docker.io', () => {
    const p = policy({ additional: { 'index.docker.io': b64('hubuser:hubpw') } });
    expect(p.credentialsFor('docker.io')).toMatchObject({ username: 'hubuser', password: 'hubpw' });
  });

  it('additional never overrides the push credentials of the workspace repository, nor reaches the build for that host', () => {
    const p = policy({ additional: { 'ws.example.com:5000': b64('attacker:pw'), 'private.example.com': b64('user:pw') } });
    expect(pushCredentials(installation, own.workspaceRepository)).toEqual({ username: 'inst-ws', password: 'inst-ws-pw' });
    expect(pushCredentials(installation, own.baseRepository)).toEqual({ username: 'inst-base', password: 'inst-base-pw' });
    const build = p.pullCredentials();
    expect(build.has('ws.example.com:5000')).toBe(false);
    expect(build.get('private.example.com')).toMatchObject({ username: 'user' });
  });

  it('pull credentials for a build hold installation credentials of allowed hosts only, plus additional ones', () => {
    const p = policy({ mode: { $case: 'selective', selective: { allowBaserep: true, allowWorkspacerep: false, anyOf: [] } }, additional: { 'extra.example.com': b64('u:p') } });
    expect([...p.pullCredentials().keys()].sort()).toEqual(['extra.example.com', 'registry.example.com']);
  });
});

describe('loadCredentialFile', () => {
  it('reads a Docker config, normalises hosts and decodes `auth` entries', () => {
    const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-auth-'));
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth: b64('hub:pw') }, 'Registry.Example.com': { username: 'u', password: 'p' } } }));
    const table = loadCredentialFile(file);
    expect(table.get('docker.io')).toMatchObject({ username: 'hub', password: 'pw' });
    expect(table.get('registry.example.com')).toMatchObject({ username: 'u', password: 'p' });
  });

  it('names the file but not its content when it cannot be parsed', () => {
    const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-auth-'));
    const file = join(dir, 'config.json');
    writeFileSync(file, '{"auths": {"x": {"password": "s3cret-value"');
    expect(() => loadCredentialFile(file)).toThrow(file);
    try {
      loadCredentialFile(file);
    } catch (err) {
      expect((err as Error).message).not.toContain('s3cret-value');
    }
  });
});

describe('registryAuthHint', () => {
  it('explains how to pass credentials when a FROM pull or an image pull is refused', () => {
    expect(registryAuthHint('step "Step 1/3 : FROM 127.0.0.1:1/p/b:latest": Head "http://127.0.0.1:1/v2/p/b/manifests/latest": no basic auth credentials')).toMatch(
      /BuildRegistryAuth\.additional/,
    );
    expect(registryAuthHint('pull of r.example.com/p@sha256:ab failed: unauthorized: authentication required')).toMatch(/selective\.any_of/);
    // BuildKit: the FROM's metadata load, or the FROM step itself.
    expect(registryAuthHint('step "FROM 127.0.0.1:1/p/b:latest": failed to authorize: failed to fetch anonymous token: unexpected status: 401 Unauthorized')).toMatch(/BuildRegistryAuth/);
    expect(registryAuthHint('step "[base 1/2] FROM 127.0.0.1:1/p/b:latest": pull access denied')).toMatch(/BuildRegistryAuth/);
  });

  it('stays silent for other failures, RUN steps that print the same words included', () => {
    expect(registryAuthHint('step "Step 2/3 : RUN echo unauthorized && exit 1": returned a non-zero code: 1')).toBeUndefined();
    expect(registryAuthHint('pull of x failed: manifest unknown')).toBeUndefined();
    expect(registryAuthHint('step "[2/3] RUN echo unauthorized && exit 1": executor failed running [/bin/sh -c echo unauthorized && exit 1]: exit code: 1')).toBeUndefined();
  });
});
