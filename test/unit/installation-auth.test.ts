import { describe, expect, it } from 'vitest';
import { InstallationAuthDenied } from '@imgbuilder/common/errors';
import { checkInstallationAuth, installationAuthAsked } from '../../apps/api/src/grpc/installation-auth.js';

const installation = new Map([['registry.example.com', { auth: 'dTpw' }]]);
const selective = (s: { allowBaserep?: boolean; allowWorkspacerep?: boolean; anyOf?: string[] }) => ({
  additional: {},
  mode: { $case: 'selective' as const, selective: { allowBaserep: false, allowWorkspacerep: false, anyOf: [], ...s } },
});
const allowAll = { additional: {}, mode: { $case: 'total' as const, total: { allowAll: true } } };

describe('installation credentials by permission', () => {
  it('names the part of BuildRegistryAuth that asks for the installation credentials', () => {
    expect(installationAuthAsked(allowAll, installation)).toBe('total.allow_all');
    expect(installationAuthAsked({ additional: {}, mode: { $case: 'total', total: { allowAll: false } } }, installation)).toBeUndefined();
    expect(installationAuthAsked(selective({ allowBaserep: true }), installation)).toBe('selective.allow_baserep');
    expect(installationAuthAsked(selective({ allowWorkspacerep: true }), installation)).toBe('selective.allow_workspacerep');
    expect(installationAuthAsked(selective({ anyOf: ['docker.io', 'Registry.Example.com'] }), installation)).toBe('selective.any_of (Registry.Example.com)');
    expect(installationAuthAsked(selective({ anyOf: ['docker.io'] }), installation)).toBeUndefined();
    expect(installationAuthAsked(undefined, installation)).toBeUndefined();
  });

  it('only tokens with installationAuth, and admins, may ask; others get an error naming the setting', () => {
    const builder = { name: 'ci', role: 'builder' as const };
    expect(() => checkInstallationAuth({ auth: allowAll }, builder, installation)).toThrow(InstallationAuthDenied);
    expect(() => checkInstallationAuth({ auth: allowAll }, builder, installation)).toThrow('token "ci" may not use the installation\'s registry credentials (total.allow_all): give its entry in IMGBUILDER_TOKENS_FILE "installationAuth": true');
    expect(() => checkInstallationAuth({ auth: allowAll }, { ...builder, installationAuth: true }, installation)).not.toThrow();
    expect(() => checkInstallationAuth({ auth: allowAll }, { name: 'ops', role: 'admin' }, installation)).not.toThrow();
    expect(() => checkInstallationAuth({ auth: selective({ anyOf: ['docker.io'] }) }, builder, installation)).not.toThrow();
    expect(() => checkInstallationAuth(undefined, builder, installation)).not.toThrow();
  });
});
