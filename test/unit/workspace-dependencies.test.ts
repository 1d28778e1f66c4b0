import { readdirSync, readFileSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');
const workspaces = ['apps/api', 'apps/worker', 'apps/cli', 'packages/common', 'packages/proto'];

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return path.endsWith('.ts') ? [path] : [];
  });
}

/** The packages a workspace's sources import: `@scope/name` or `name`, without subpaths and without Node's own. */
function imported(workspace: string): Set<string> {
  const found = new Set<string>();
  // Static imports and re-exports (which may span lines), side-effect imports, dynamic imports.
  const specifiers = [/^(?:import|export)\b[^;]*?\bfrom\s*(['"])([^'"\s]+)\1/gm, /^import\s*(['"])([^'"\s]+)\1/gm, /\bimport\(\s*(['"])([^'"\s]+)\1/g];
  for (const file of sources(join(root, workspace, 'src'))) {
    const text = readFileSync(file, 'utf8');
    for (const m of specifiers.flatMap((re) => [...text.matchAll(re)])) {
      const spec = m[2];
      if (spec.startsWith('.') || spec.startsWith('node:') || builtinModules.includes(spec.split('/')[0])) continue;
      const parts = spec.split('/');
      found.add(spec.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]);
    }
  }
  return found;
}

describe('workspace manifests', () => {
  // Each app and package installs on its own (a slimmer image, a split repository): what it imports, it declares.
  it.each(workspaces)('%s declares every package it imports, and nothing it does not', (workspace) => {
    const manifest = JSON.parse(readFileSync(join(root, workspace, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
    const declared = Object.keys(manifest.dependencies ?? {}).sort();
    expect(declared).toEqual([...imported(workspace)].sort());
  });
});
