import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

// The test tiers (README "Tests"), checked by reading the sources: what each may import.
const ROOT = resolve(import.meta.dirname, '../..');

function filesUnder(dir: string, suffix: string): string[] {
  return readdirSync(join(ROOT, dir), { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith(suffix))
    .map((e) => relative(ROOT, join(e.parentPath, e.name)));
}

/** The module specifiers a TypeScript file imports (static and dynamic), as written. */
function importsOf(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  return [...text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+'([^']+)'|import\(\s*'([^']+)'\s*\)/g)].map((m) => m[1] ?? m[2]);
}

/** A relative specifier as a path from the root (`../support/x.js` → `test/support/x.ts`). */
const resolveRelative = (from: string, spec: string) => relative(ROOT, resolve(ROOT, dirname(from), spec)).replace(/\.js$/, '.ts');

/** The test code a file reaches through relative imports (apps and packages, the code under test, are not followed). */
function testCodeReached(file: string): string[] {
  const seen = new Set<string>([file]);
  for (const f of seen) {
    for (const spec of importsOf(f)) {
      if (!spec.startsWith('.')) continue;
      const target = resolveRelative(f, spec);
      if (/^(test|testkit)\//.test(target)) seen.add(target);
    }
  }
  return [...seen];
}

describe('test tiers', () => {
  it('test/unit is in-process: neither its files nor the test code they import start a process', () => {
    const offenders = filesUnder('test/unit', '.test.ts').flatMap((file) =>
      testCodeReached(file)
        .filter((f) => importsOf(f).some((spec) => /^(node:)?child_process$/.test(spec)))
        .map((f) => (f === file ? file : `${file} through ${f}`)),
    );
    expect(offenders, 'move these to test/component (single binaries) or test/integration (the local stack)').toEqual([]);
  });

  it('every test file is in a tier vitest runs', () => {
    const tiers = ['test/unit/', 'test/component/', 'test/integration/'];
    expect(filesUnder('test', '.test.ts').filter((f) => !tiers.some((t) => f.startsWith(t)))).toEqual([]);
    expect(readFileSync(join(ROOT, 'vitest.config.ts'), 'utf8')).toEqual(expect.stringContaining("include: ['test/component/**/*.test.ts']"));
  });

  it('bench imports no test code: what both need lives in testkit/', () => {
    const offenders = filesUnder('bench', '.ts').flatMap((file) => importsOf(file).filter((spec) => spec.startsWith('.') && resolveRelative(file, spec).startsWith('test/')).map((spec) => `${file}: ${spec}`));
    expect(offenders).toEqual([]);
  });
});
