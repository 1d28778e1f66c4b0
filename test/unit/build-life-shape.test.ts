import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { redisKeys, TERMINAL_STATES } from '@imgbuilder/common/build-life';
import { luaFiles } from '../../packages/common/src/build-life/lua-files.js';
import { compileScripts } from '../../packages/common/src/build-life/scripts.js';

const ROOT = join(import.meta.dirname, '../..');

describe('the build Lua scripts', () => {
  const files = luaFiles();
  const scripts = compileScripts(files);

  it('are every file of lua/, each with its key count, its includes inlined once, and the terminal set of state.ts', () => {
    expect([...scripts.keys()].sort()).toEqual(Object.keys(files.scripts).map((f) => f.replace(/-\d+$/, '')).sort());
    expect(scripts.get('finish')).toMatchObject({ command: 'imgbFinish', numberOfKeys: 7 });
    expect(scripts.get('create-or-join')).toMatchObject({ command: 'imgbCreateOrJoin', numberOfKeys: 6 });
    for (const [name, s] of scripts) {
      const prelude = s.lua.split('\n')[0];
      expect(prelude, name).toMatch(/^local TERMINAL_STATES = \{/);
      for (const state of TERMINAL_STATES) expect(prelude, name).toContain(`['${state}'] = true`);
      expect(s.lua, name).not.toMatch(/@include/);
    }
    expect(scripts.get('finish')?.lua.match(/local function (isTerminal|holdsFence)/g)).toEqual(['local function isTerminal', 'local function holdsFence']);
  });

  it('spell the terminal states nowhere: the scripts share the one set', () => {
    for (const [name, text] of [...Object.entries(files.scripts), ...Object.entries(files.includes)]) {
      for (const state of TERMINAL_STATES) expect(text, name).not.toContain(state);
    }
  });

  it('refuse a file without its key count and an include that does not exist', () => {
    expect(() => compileScripts({ scripts: { finish: 'return 0' }, includes: {} })).toThrow(/<name>-<number of keys>\.lua/);
    expect(() => compileScripts({ scripts: { 'finish-1': '--- @include "nope"\nreturn 0' }, includes: {} })).toThrow(/includes nope/);
    const once = compileScripts({ scripts: { 'x-0': '--- @include "a"\n--- @include "a"\nreturn 0' }, includes: { a: '-- A' } });
    expect(once.get('x')?.lua.match(/-- A/g)).toHaveLength(1);
  });
});

describe('a build’s life in Redis', () => {
  it('is named only inside packages/common/src/build-life: no other source reads a build key from RedisKeys', () => {
    // The layer cache's bookkeeping (cacheLastUse, cacheRetentionDone) is named in the same list but belongs to
    // cache-refs.ts and the workers' retention duty, not to a build's life.
    const notBuildKeys = new Set(['queuePrefix', 'hashTag', 'cacheLastUse', 'cacheRetentionDone']);
    const owned = Object.keys(redisKeys('x')).filter((k) => !notBuildKeys.has(k));
    const use = new RegExp(`\\b\\w*[kK]eys\\??\\.(${owned.join('|')})\\b`);
    const offenders: string[] = [];
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, e.name);
        if (e.isDirectory()) {
          if (e.name !== 'node_modules' && e.name !== 'dist' && e.name !== 'gen' && !path.endsWith(join('common', 'src', 'build-life'))) walk(path);
        } else if (e.name.endsWith('.ts')) {
          const text = readFileSync(path, 'utf8');
          if (use.test(text) || /build-life\/(?!index\.js)\w/.test(text)) offenders.push(relative(ROOT, path));
        }
      }
    };
    for (const top of ['apps', 'packages', 'bench']) walk(join(ROOT, top));
    expect(offenders).toEqual([]);
  });
});
