import { defineConfig } from 'vitest/config';

// Each project's own settings; global setup and reporters are the run's, so global setup runs once, not per project.
const timeouts = { testTimeout: 180_000, hookTimeout: 120_000 };

export default defineConfig({
  test: {
    globalSetup: ['test/support/global-setup.ts'],
    reporters: ['default', './test/support/summary-reporter.ts'],
    projects: [
      // In-process and independent of each other: two files at a time (vitest's default is one on two cores).
      { test: { ...timeouts, name: 'unit', include: ['test/unit/**/*.test.ts'], maxWorkers: 2 } },
      // Integration tests share one Docker engine and registry on a 2-core machine: one file at a time; of a file's
      // describe.concurrent blocks at most three at a time, so their process start-ups do not pile up.
      { test: { ...timeouts, name: 'integration', include: ['test/integration/**/*.test.ts'], fileParallelism: false, maxConcurrency: 3 } },
    ],
  },
});
