import { defineConfig } from 'vitest/config';

// Three tiers (README "Tests"): each project's own settings and set-up; reporters are the run's.
const timeouts = { testTimeout: 180_000, hookTimeout: 120_000 };

export default defineConfig({
  test: {
    reporters: ['default', './test/support/summary-reporter.ts'],
    projects: [
      // In-process only: no child process, no server process, no set-up. Two files at a time (vitest's default is one on two cores).
      { test: { ...timeouts, name: 'unit', include: ['test/unit/**/*.test.ts'], maxWorkers: 2 } },
      // Single binaries started by the test itself (a private redis-server or s3rver, git daemon, the app bundles,
      // unshare): no local stack. Set-up builds the bundles.
      { test: { ...timeouts, name: 'component', include: ['test/component/**/*.test.ts'], maxWorkers: 2, globalSetup: ['test/support/bundles-setup.ts'] } },
      // Integration tests share one Docker engine and registry on a 2-core machine: one file at a time; of a file's
      // describe.concurrent blocks at most three at a time, so their process start-ups do not pile up. Set-up starts
      // the local stack and builds the bundles.
      { test: { ...timeouts, name: 'integration', include: ['test/integration/**/*.test.ts'], fileParallelism: false, maxConcurrency: 3, globalSetup: ['test/support/global-setup.ts'] } },
    ],
  },
});
