import { readdirSync, readFileSync } from 'node:fs';

/** The texts of this folder's .lua files by name (no extension): the scripts in lua/, their includes in lua/includes/. */
export interface LuaFiles {
  scripts: Record<string, string>;
  includes: Record<string, string>;
}

/**
 * Reads lua/ next to this file (sources run by tsx and vitest). The production bundle never runs this body:
 * scripts/build.mjs replaces the module with one that imports each .lua file as text, so the bundle needs no files
 * beside it.
 */
export function luaFiles(): LuaFiles {
  const read = (sub: string) => {
    const dir = new URL(`./lua/${sub}`, import.meta.url);
    const names = readdirSync(dir).filter((f) => f.endsWith('.lua'));
    return Object.fromEntries(names.map((f) => [f.slice(0, -'.lua'.length), readFileSync(new URL(f, dir), 'utf8')]));
  };
  return { scripts: read(''), includes: read('includes/') };
}
