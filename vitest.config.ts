import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 180_000,
    hookTimeout: 120_000,
    reporters: ['default', './test/support/summary-reporter.ts'],
    projects: [
      // In-process and independent of each other: two files at a time (vitest's default is one on two cores).
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'], maxWorkers: 2 } },
      // Integration tests share one Docker engine and registry on a 2-core machine: one file at a time.
      // describe.concurrent blocks of a file: at most three at a time, so their process start-ups do not pile up.
      { extends: true, test: { name: 'integration', include: ['test/integration/**/*.test.ts'], fileParallelism: false, maxConcurrency: 3 } },
    ],
  },
});
