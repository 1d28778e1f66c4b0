import { spawnSync } from 'node:child_process';
import { parseAllDocuments } from 'yaml';
import type { Doc } from './manifests.js';

// kubectl runs as a child process: the component tier's, never the unit tier's.

/** `kubectl kustomize DIR`, or undefined where kubectl is not installed. */
export function kubectlKustomize(dir: string): Doc[] | undefined {
  const res = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 60_000 });
  if (res.error && (res.error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
  if (res.status !== 0) throw new Error(`kubectl kustomize ${dir} failed: ${res.stderr || res.error?.message}`);
  const docs = parseAllDocuments(res.stdout).map((d) => d.toJS() as Doc);
  // kustomize folds long base64 Secret values over several lines; the API server's decoder skips the line breaks,
  // the schema's "byte" format does not.
  for (const d of docs) {
    if (d.kind === 'Secret' && d.data) for (const k of Object.keys(d.data)) d.data[k] = String(d.data[k]).replace(/\s+/g, '');
  }
  return docs;
}

export function hasKubectl(): boolean {
  const res = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8', timeout: 30_000 });
  return res.status === 0;
}
