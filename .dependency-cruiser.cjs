// Import rules, checked by test/unit/layers.test.ts (`npx depcruise apps packages` prints the same report).
// The API and the worker meet only through Redis and packages/common; no module imports itself round a cycle,
// type-only imports included (a cycle of types still ties the two files' designs together).
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    { name: 'no-cycle', severity: 'error', comment: 'an import cycle', from: {}, to: { circular: true } },
    { name: 'api-not-worker', severity: 'error', comment: 'the API imports nothing of the worker', from: { path: '^apps/api/' }, to: { path: '^apps/worker/' } },
    { name: 'worker-not-api', severity: 'error', comment: 'the worker imports nothing of the API', from: { path: '^apps/worker/' }, to: { path: '^apps/api/' } },
    { name: 'common-not-apps', severity: 'error', comment: 'packages import no app', from: { path: '^packages/' }, to: { path: '^apps/' } },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)(node_modules|dist)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default', 'types'], extensions: ['.ts', '.js', '.mjs', '.json'] },
  },
};
