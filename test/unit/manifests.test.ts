import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadEnv } from '@imgbuilder/common/config';
import { FetchPolicy } from '@imgbuilder/common/fetch-policy';
import { dataOf, find, loadYaml, parseEnvFile, readKustomization, referencedFiles, render, validateManifest, type Doc } from '../support/manifests.js';
import { BASE, BUNDLED_KEYS, ENGINE, OVERLAY, SECRET_KEYS } from '../support/k8s.js';
import { renderContract } from '../support/k8s-render-contract.js';

// Kubernetes manifests read in-process (the component tier runs their scripts, and kubectl where it is installed).
describe('Kubernetes manifests: kustomization files', () => {
  it.each([
    ['base', BASE],
    ['example overlay', OVERLAY],
    ['engine scripts', ENGINE],
  ])('%s lists every manifest in its directory, and every listed file exists', (_, dir) => {
    const referenced = referencedFiles(dir);
    const present = readdirSync(dir).filter((f) => f !== 'kustomization.yaml' && statSync(join(dir, f)).isFile());
    expect(present.filter((f) => !referenced.includes(f)), 'files in the directory that kustomize would ignore').toEqual([]);
    expect(referenced.filter((f) => !present.includes(f)), 'listed files that do not exist').toEqual([]);
  });

  it('the overlay builds on the base and replaces both placeholder Secrets', () => {
    const k = readKustomization(OVERLAY);
    expect(k.resources).toContain('../../base');
    expect(k.secretGenerator?.map((g) => [g.name, g.behavior])).toEqual([
      ['imgbuilder-secrets', 'replace'],
      ['imgbuilder-registry-auth', 'replace'],
      ['imgbuilder-bundled-secrets', 'replace'],
      ['imgbuilder-registry-htpasswd', 'replace'],
    ]);
    expect(Object.keys(parseEnvFile(readFileSync(join(OVERLAY, 'secrets.env'), 'utf8'))).sort()).toEqual([...SECRET_KEYS].sort());
    expect(Object.keys(parseEnvFile(readFileSync(join(OVERLAY, 'bundled-secrets.env'), 'utf8'))).sort()).toEqual([...BUNDLED_KEYS].sort());
  });
});

describe('schema validation', () => {
  it('rejects a Deployment without spec.selector (the validator can fail)', () => {
    const broken = loadYaml(join(BASE, 'api.yaml')).find((d) => d.kind === 'Deployment')!;
    expect(() => validateManifest(broken)).not.toThrow();
    delete broken.spec.selector;
    expect(() => validateManifest(broken)).toThrow(/selector/);
  });

  it('rejects a ScaledObject without triggers and a container port written as a string', () => {
    const so = loadYaml(join(BASE, 'worker-scaledobject.yaml'))[0];
    delete so.spec.triggers;
    expect(() => validateManifest(so)).toThrow(/triggers/);
    const api = loadYaml(join(BASE, 'api.yaml'))[0];
    api.spec.template.spec.containers[0].ports[0].containerPort = '8080';
    expect(() => validateManifest(api)).toThrow(/containerPort must be integer/);
  });

  it('rejects a kind it has no schema for rather than passing it unchecked', () => {
    expect(() => validateManifest({ apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'x' } })).toThrow(/no schema/);
  });
});

const renders: [string, () => Doc[]][] = [
  ['base', () => render(BASE)],
  ['example overlay', () => render(OVERLAY)],
];

describe.each(renders)('%s', renderContract);

describe('placeholders', () => {
  it('the placeholder secret key cannot start a service, so a forgotten placeholder is never used as a key', () => {
    for (const value of [dataOf(find(render(BASE), 'Secret', 'imgbuilder-secrets')).IMGBUILDER_SECRET_KEY, parseEnvFile(readFileSync(join(OVERLAY, 'secrets.env'), 'utf8')).IMGBUILDER_SECRET_KEY]) {
      expect(value).toMatch(/REPLACE_ME/);
      expect(() => loadEnv({ IMGBUILDER_SECRET_KEY: value })).toThrow(/32 bytes/);
    }
  });

  it('the fetch policy denies the placeholder pod and service ranges and the engine sidecar; the bundled registry stays reachable', async () => {
    const config = dataOf(find(render(BASE), 'ConfigMap', 'imgbuilder-config'));
    const policy = FetchPolicy.fromEnv(loadEnv({ ...config, IMGBUILDER_SECRET_KEY: Buffer.alloc(32, 7).toString('base64') }));
    expect(config.IMGBUILDER_FETCH_DENY.split(',')).toEqual(['10.244.0.0/16', '10.96.0.0/12']);
    expect(policy.refusal('10.96.0.10', 6379)).toMatch(/IMGBUILDER_FETCH_DENY/);
    expect(policy.refusal('10.244.3.7', 9000)).toMatch(/IMGBUILDER_FETCH_DENY/);
    expect(policy.refusal('127.0.0.1', 2375)).toMatch(/loopback/);
    const inCluster = async () => [{ address: '10.96.0.20' }];
    await expect(policy.resolve({ host: 'imgbuilder-registry', port: 5000, what: 'registry', shown: 'imgbuilder-registry:5000' }, inCluster)).resolves.toMatchObject({ address: '10.96.0.20' });
    await expect(policy.resolve({ host: 'imgbuilder-redis', port: 6379, what: 'download url', shown: 'http://imgbuilder-redis:6379/' }, inCluster)).rejects.toThrow(/is refused by the fetch policy/);
  });
});
