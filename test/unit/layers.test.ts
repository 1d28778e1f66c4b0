import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../..');

/** The one module (or folder) of each layer where its error classes are declared. */
const ERROR_HOMES = [/^packages\/common\/src\/errors(\.ts|\/)/, /^apps\/api\/src\/errors\.ts$/, /^apps\/worker\/src\/errors\.ts$/, /^apps\/cli\/src\/cli-error\.ts$/];

/** Hand-written TypeScript under apps/ and packages/ (generated protocol code left out). */
function sourceFiles(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) {
        if (e.name !== 'node_modules' && e.name !== 'gen' && e.name !== 'dist') walk(p);
      } else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(relative(ROOT, p));
    }
  };
  for (const top of ['apps', 'packages']) walk(join(ROOT, top));
  return out;
}

describe('layers: where code of each kind lives', () => {
  it('declares error classes only in its layer\'s errors module', () => {
    const files = sourceFiles();
    const declared = files.flatMap((file) => [...readFileSync(join(ROOT, file), 'utf8').matchAll(/\bclass (\w+)(?:<[^>]*>)? extends (\w+)/g)].map((m) => ({ file, name: m[1], base: m[2] })));
    // An error class extends Error or another error class, whose names end in Error or are declared in an errors home.
    const errorNames = new Set(['Error', ...declared.filter((d) => ERROR_HOMES.some((h) => h.test(d.file))).map((d) => d.name)]);
    const misplaced = declared.filter((d) => (errorNames.has(d.base) || d.base.endsWith('Error')) && !ERROR_HOMES.some((h) => h.test(d.file)));
    expect(declared.length).toBeGreaterThan(50);
    expect(misplaced.map((d) => `${d.file}: ${d.name} extends ${d.base}`)).toEqual([]);
  });
});
