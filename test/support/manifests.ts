import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { PersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { Job } from 'kubernetes-models/batch/v1/Job';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject';

/** A parsed Kubernetes object; fields are read loosely because tests assert on them. */
 
export type Doc = Record<string, any>;

/** The schema of every kind imgbuilder's manifests use; a kind missing here fails the validation test. */
const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'v1/ConfigMap': ConfigMap,
  'v1/Namespace': Namespace,
  'v1/PersistentVolumeClaim': PersistentVolumeClaim,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'apps/v1/StatefulSet': StatefulSet,
  'batch/v1/Job': Job,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
  'keda.sh/v1alpha1/ScaledObject': ScaledObject,
};

/** Validates against the Kubernetes (or KEDA) OpenAPI schema; throws naming the bad field. */
export function validateManifest(doc: Doc): void {
  const Model = MODELS[`${doc.apiVersion}/${doc.kind}`];
  if (!Model) throw new Error(`no schema for ${doc.apiVersion} ${doc.kind}`);
  new Model(doc as never).validate();
}

export function loadYaml(path: string): Doc[] {
  return parseAllDocuments(readFileSync(path, 'utf8'))
    .map((d) => {
      if (d.errors.length) throw new Error(`${path}: ${d.errors[0].message}`);
      return d.toJS() as Doc | null;
    })
    .filter((d): d is Doc => d !== null);
}

export interface Kustomization {
  namespace?: string;
  resources?: string[];
  patches?: { path: string }[];
  images?: { name: string; newName?: string; newTag?: string }[];
  labels?: { pairs: Record<string, string> }[];
  configMapGenerator?: Generator[];
  secretGenerator?: Generator[];
}

interface Generator {
  name: string;
  behavior?: 'create' | 'replace' | 'merge';
  type?: string;
  files?: string[];
  envs?: string[];
  literals?: string[];
}

export function readKustomization(dir: string): Kustomization {
  return parse(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as Kustomization;
}

/** Every file a kustomization names: resources (not directories), patches, generator inputs. */
export function referencedFiles(dir: string): string[] {
  const k = readKustomization(dir);
  const generatorFiles = [...(k.configMapGenerator ?? []), ...(k.secretGenerator ?? [])].flatMap((g) => [
    ...(g.files ?? []).map((f) => f.split('=').pop()!),
    ...(g.envs ?? []),
  ]);
  return [...(k.resources ?? []), ...(k.patches ?? []).map((p) => p.path), ...generatorFiles].filter((f) => !f.startsWith('..'));
}

/**
 * A small kustomize for tests that must run without kubectl: resources, generators, patches, namespace, images and
 * labels. Patches merge maps and replace lists, which is what kustomize does for custom resources and for the maps
 * (ConfigMap data) the example overlay patches. Generated names carry no hash suffix here.
 */
export function render(dir: string): Doc[] {
  const k = readKustomization(dir);
  let docs: Doc[] = [];
  for (const r of k.resources ?? []) {
    const path = join(dir, r);
    docs.push(...(existsSync(join(path, 'kustomization.yaml')) ? render(path) : loadYaml(path)));
  }
  const generate = (kind: 'ConfigMap' | 'Secret', g: Generator) => {
    const data: Record<string, string> = {};
    for (const f of g.files ?? []) {
      const [key, file] = f.includes('=') ? f.split('=') : [basename(f), f];
      data[key] = readFileSync(join(dir, file), 'utf8');
    }
    for (const e of g.envs ?? []) Object.assign(data, parseEnvFile(readFileSync(join(dir, e), 'utf8')));
    for (const l of g.literals ?? []) data[l.slice(0, l.indexOf('='))] = l.slice(l.indexOf('=') + 1);
    const doc: Doc = { apiVersion: 'v1', kind, metadata: { name: g.name }, ...(kind === 'Secret' ? { type: g.type ?? 'Opaque', stringData: data } : { data }) };
    const i = docs.findIndex((d) => d.kind === kind && d.metadata.name === g.name);
    if (g.behavior === 'replace' || g.behavior === 'merge') {
      if (i < 0) throw new Error(`${dir}: ${kind} ${g.name} has behavior ${g.behavior} but no base resource`);
      docs[i] = g.behavior === 'replace' ? doc : merge(docs[i], doc);
    } else docs.push(doc);
  };
  for (const g of k.configMapGenerator ?? []) generate('ConfigMap', g);
  for (const g of k.secretGenerator ?? []) generate('Secret', g);
  for (const p of k.patches ?? []) {
    for (const patch of loadYaml(join(dir, p.path))) {
      const i = docs.findIndex((d) => d.kind === patch.kind && d.metadata.name === patch.metadata.name);
      if (i < 0) throw new Error(`${dir}/${p.path}: no ${patch.kind} ${patch.metadata.name} to patch`);
      docs[i] = merge(docs[i], patch);
    }
  }
  docs = docs.map((d) => structuredClone(d));
  for (const d of docs) {
    if (k.namespace && d.kind !== 'Namespace') d.metadata.namespace = k.namespace;
    for (const l of k.labels ?? []) d.metadata.labels = { ...d.metadata.labels, ...l.pairs };
    for (const c of containers(d)) {
      const img = k.images?.find((i) => c.image === i.name || c.image.startsWith(`${i.name}:`));
      if (img) c.image = `${img.newName ?? img.name}:${img.newTag ?? c.image.split(':')[1] ?? 'latest'}`;
    }
  }
  return docs;
}

function merge(base: Doc, patch: Doc): Doc {
  const out: Doc = { ...base };
  for (const [k, v] of Object.entries(patch)) {
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && out[k] && typeof out[k] === 'object' && !Array.isArray(out[k]) ? merge(out[k], v) : v;
  }
  return out;
}

export function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t || t.startsWith('#')) continue;
    const i = t.indexOf('=');
    out[t.slice(0, i)] = t.slice(i + 1);
  }
  return out;
}

/** Containers, init containers (sidecars) included, of a workload's pod template. */
export function containers(doc: Doc): Doc[] {
  const spec = podSpec(doc);
  return spec ? [...(spec.initContainers ?? []), ...(spec.containers ?? [])] : [];
}

export function podSpec(doc: Doc): Doc | undefined {
  return doc.spec?.template?.spec;
}

/** The object of that kind and name; a generated name may carry kustomize's hash suffix. */
export function find(docs: Doc[], kind: string, name: string): Doc {
  const found = docs.find((d) => d.kind === kind && (d.metadata.name === name || new RegExp(`^${name}-[a-z0-9]{10}$`).test(d.metadata.name)));
  if (!found) throw new Error(`no ${kind} ${name} in [${docs.map((d) => `${d.kind}/${d.metadata.name}`).join(', ')}]`);
  return found;
}

/** Data of a ConfigMap or Secret as strings, whether written as data (base64 for Secrets) or stringData. */
export function dataOf(doc: Doc): Record<string, string> {
  const out: Record<string, string> = { ...(doc.stringData ?? {}) };
  for (const [k, v] of Object.entries<string>(doc.data ?? {})) out[k] = doc.kind === 'Secret' ? Buffer.from(v, 'base64').toString('utf8') : v;
  return out;
}

export const repoPath = (...parts: string[]) => join(dirname(new URL(import.meta.url).pathname), '../..', ...parts);
