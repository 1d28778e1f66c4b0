#!/usr/bin/env node
// Runs the TypeScript CLI in this process through tsx's loader, so `npx imgbuilder` works right after `npm ci`
// with no build step, and signals (Ctrl-C detaches from a build) reach the CLI directly.
import { register } from 'tsx/esm/api';

register();
await import(new URL('../apps/cli/src/main.ts', import.meta.url).href);
