import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { walkContext, type WalkOptions } from '@imgbuilder/common/context-walker';

/** A temp directory holding `files` (path → content). */
export function contextDir(files: Record<string, string | Buffer>): string {
  const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-walker-'));
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), content);
  }
  return dir;
}

/** The paths the context walker sends, in its order. */
export async function paths(dir: string, options?: WalkOptions): Promise<string[]> {
  return (await walkContext(dir, options)).entries.map((e) => e.path);
}
