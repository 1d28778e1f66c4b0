import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { cruise, type ICruiseResult } from 'dependency-cruiser';
import extractDepcruiseOptions from 'dependency-cruiser/config-utl/extract-depcruise-options';
import extractTSConfig from 'dependency-cruiser/config-utl/extract-ts-config';
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

/** The import rules of .dependency-cruiser.cjs broken under `baseDir`, one line each. */
async function importViolations(paths: string[], baseDir = ROOT): Promise<string[]> {
  const options = await extractDepcruiseOptions(join(ROOT, '.dependency-cruiser.cjs'));
  const result = await cruise(paths, { ...options, baseDir }, undefined, { tsConfig: extractTSConfig(join(ROOT, 'tsconfig.json')) });
  const { summary } = result.output as ICruiseResult;
  return summary.violations.map((v) => `${v.rule.name}: ${[v.from, ...(v.cycle ?? []).map((c) => c.name)].join(' -> ')}${v.cycle ? '' : ` -> ${v.to}`}`);
}

describe('layers: where code of each kind lives', () => {
  it('has no import cycle, and the API and the worker import nothing of each other (.dependency-cruiser.cjs)', async () => {
    expect(await importViolations(['apps', 'packages', 'bench', 'test', 'testkit', 'scripts', 'bin'])).toEqual([]);
  });

  it('the import check sees a cycle and an import across the two apps', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'imgb-layers-'));
    try {
      const files: Record<string, string> = {
        'apps/api/src/a.ts': "import { b } from '../../worker/src/b.js';\nexport const a = () => b;\n",
        'apps/worker/src/b.ts': "import { a } from '../../api/src/a.js';\nexport const b = () => a;\n",
      };
      for (const [path, text] of Object.entries(files)) {
        mkdirSync(dirname(join(dir, path)), { recursive: true });
        writeFileSync(join(dir, path), text);
      }
      const found = await importViolations(['apps'], dir);
      expect(found).toEqual(
        expect.arrayContaining([expect.stringMatching(/^no-cycle: /), expect.stringMatching(/^api-not-worker: apps\/api\/src\/a\.ts -> apps\/worker\/src\/b\.ts/), expect.stringMatching(/^worker-not-api: /)]),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps every hand-written source file of the apps and the packages within 350 lines', () => {
    const long = sourceFiles()
      .filter((f) => /^(apps|packages)\//.test(f))
      .map((f) => ({ f, lines: readFileSync(join(ROOT, f), 'utf8').split('\n').length - 1 }))
      .filter(({ lines }) => lines > 350);
    expect(long.map(({ f, lines }) => `${f}: ${lines} lines`)).toEqual([]);
  });

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
