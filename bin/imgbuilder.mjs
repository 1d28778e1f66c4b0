#!/usr/bin/env node
// Runs the TypeScript CLI in this process through tsx's loader, so `npx imgbuilder` works right after `npm ci`
// with no build step, and signals (Ctrl-C detaches from a build) reach the CLI directly. Where tsx is not
// installed (production dependencies only), it runs the compiled CLI of `npm run build` instead.
let register;
try {
  ({ register } = await import('tsx/esm/api'));
} catch (err) {
  if (err?.code !== 'ERR_MODULE_NOT_FOUND') throw err;
}
if (register) {
  register();
  await import(new URL('../apps/cli/src/main.ts', import.meta.url).href);
} else {
  await import(new URL('../apps/cli/dist/main.js', import.meta.url).href);
}
