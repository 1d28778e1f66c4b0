import type { RedisClient } from '../redis.js';
import { luaFiles } from './lua-files.js';
import { TERMINAL_STATES } from './state.js';

/**
 * The build's Lua scripts, as BullMQ keeps its own (src/commands/): one file per script in lua/, named
 * `<name>-<number of keys>.lua`, whose `--- @include "<name>"` lines take in lua/includes/<name>.lua (each at most
 * once). Every script starts with the terminal set of state.ts, so TypeScript and Lua share one definition of it.
 */
export interface Script {
  /** The command ioredis defines on a client: `imgb` and the file name in camel case (finish-7 is imgbFinish). */
  command: string;
  numberOfKeys: number;
  lua: string;
}

const INCLUDE = /^--- @include "([\w-]+)"[ \t]*$/gm;

function prelude(): string {
  return `local TERMINAL_STATES = { ${TERMINAL_STATES.map((s) => `['${s}'] = true`).join(', ')} }\n`;
}

/** Parses the files into scripts; throws on a file not named `<name>-<keys>.lua` or an include that does not exist. */
export function compileScripts(files = luaFiles()): Map<string, Script> {
  const scripts = new Map<string, Script>();
  for (const [file, text] of Object.entries(files.scripts)) {
    const m = /^([a-z][a-z-]*)-(\d+)$/.exec(file);
    if (!m) throw new Error(`lua script ${file}.lua: name it <name>-<number of keys>.lua`);
    const seen = new Set<string>();
    const body = text.replace(INCLUDE, (_, inc: string) => {
      const included = files.includes[inc];
      if (included === undefined) throw new Error(`lua script ${file}.lua includes ${inc}, which lua/includes/ does not hold`);
      if (seen.has(inc)) return '';
      seen.add(inc);
      return included;
    });
    const command = 'imgb' + m[1].replace(/(^|-)([a-z])/g, (_, _dash: string, c: string) => c.toUpperCase());
    scripts.set(m[1], { command, numberOfKeys: Number(m[2]), lua: prelude() + body });
  }
  return scripts;
}

let compiled: Map<string, Script> | undefined;
const defined = new WeakSet<RedisClient>();

/**
 * Runs script `name` (its file name without the key count) on `redis`. Each client gets the scripts once (ioredis
 * `defineCommand`: EVALSHA, falling back to EVAL when the server does not hold the script yet).
 */
export async function runScript(redis: RedisClient, name: string, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
  compiled ??= compileScripts();
  const script = compiled.get(name);
  if (!script) throw new Error(`no lua script ${name}`);
  if (keys.length !== script.numberOfKeys) throw new Error(`lua script ${name} takes ${script.numberOfKeys} keys, not ${keys.length}`);
  if (!defined.has(redis)) {
    for (const s of compiled.values()) redis.defineCommand(s.command, { numberOfKeys: s.numberOfKeys, lua: s.lua });
    defined.add(redis);
  }
  const run = (redis as unknown as Record<string, (...a: (string | number)[]) => Promise<unknown>>)[script.command];
  return run.call(redis, ...keys, ...args);
}
