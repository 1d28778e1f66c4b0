// Compiles the API, the worker and the CLI into one ES module each, apps/<app>/dist/main.js, for production.
// A bundler rather than `tsc` emit: the workspace packages export their TypeScript sources (`./src/*.ts`), which
// plain Node cannot load, so they are inlined; third-party packages stay external and load from node_modules.
// Each bundle sits one level below its app, like src/ does, so paths resolved from import.meta.url
// (apps/api/dashboard/) hold for both. Type checking is `npm run typecheck`'s job: esbuild only strips types.
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { build } from 'esbuild';

const root = new URL('..', import.meta.url).pathname;
const apps = ['api', 'worker', 'cli'];

/** Bare imports other than our own @imgbuilder/* workspaces are left to Node's resolver at run time. */
const externalThirdParty = {
  name: 'external-third-party',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, (args) => (args.path.startsWith('@imgbuilder/') ? undefined : { path: args.path, external: true }));
  },
};

/**
 * The build's Lua scripts go into the bundle as text (esbuild's `text` loader), so it needs no files beside it:
 * packages/common/src/build-life/lua-files.ts, which reads lua/ at run time from the sources, becomes a module that
 * imports every .lua file there.
 */
const inlineLua = {
  name: 'inline-lua',
  setup(b) {
    b.onLoad({ filter: /[\\/]build-life[\\/]lua-files\.ts$/ }, (args) => {
      const dir = dirname(args.path);
      const imports = [];
      const table = (sub) => {
        const entries = readdirSync(join(dir, 'lua', sub))
          .filter((f) => f.endsWith('.lua'))
          .map((f) => {
            const local = `lua${imports.push(`./lua/${sub}${f}`) - 1}`;
            return `${JSON.stringify(f.slice(0, -'.lua'.length))}: ${local}`;
          });
        return `{ ${entries.join(', ')} }`;
      };
      const body = `export function luaFiles() { return { scripts: ${table('')}, includes: ${table('includes/')} }; }`;
      const head = imports.map((path, i) => `import lua${i} from ${JSON.stringify(path)};`);
      return { contents: [...head, body].join('\n'), loader: 'js', resolveDir: dir };
    });
  },
};

/** Each app's main, and the limits agent that runs in the worker's engine container (apps/worker/dist/limits-agent.js). */
const entries = [...apps.map((app) => [`apps/${app}/src/main.ts`, `apps/${app}/dist/main.js`]), ['apps/worker/src/limits-agent-main.ts', 'apps/worker/dist/limits-agent.js']];

await Promise.all(
  entries.map(([entry, outfile]) =>
    build({
      absWorkingDir: root,
      entryPoints: [entry],
      outfile,
      bundle: true,
      platform: 'node',
      format: 'esm',
      // The oldest Node the code supports (package.json "engines").
      target: 'node20.19',
      sourcemap: true,
      logLevel: 'warning',
      loader: { '.lua': 'text' },
      plugins: [externalThirdParty, inlineLua],
    }),
  ),
);
console.log(`built ${entries.map(([, out]) => out).join(', ')}`);
