// Compiles the API, the worker and the CLI into one ES module each, apps/<app>/dist/main.js, for production.
// A bundler rather than `tsc` emit: the workspace packages export their TypeScript sources (`./src/*.ts`), which
// plain Node cannot load, so they are inlined; third-party packages stay external and load from node_modules.
// Each bundle sits one level below its app, like src/ does, so paths resolved from import.meta.url
// (apps/api/dashboard/) hold for both. Type checking is `npm run typecheck`'s job: esbuild only strips types.
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
      plugins: [externalThirdParty],
    }),
  ),
);
console.log(`built ${entries.map(([, out]) => out).join(', ')}`);
