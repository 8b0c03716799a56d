import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/integration/global-setup.ts'],
          // One file at a time: they share the test pool and check that each test leaves it empty.
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 180_000,
        },
      },
      {
        // The heavy suite `.ci/run` runs after `npm test`: Debian images per arch, real apt installs
        // through the package cache, real builds, the fleet over network namespaces, and the fault
        // tests (worker SIGKILL, Redis restart, Sentinel failover: each waits out real timeouts),
        // and the slower end-to-end checks of up, worker signals, the ops files and time multipliers.
        // Not part of `npm test` (its 10-minute budget).
        test: {
          name: 'system',
          include: ['test/system/**/*.test.ts'],
          globalSetup: ['test/integration/global-setup.ts'],
          fileParallelism: false,
          testTimeout: 1_200_000,
          hookTimeout: 3_600_000,
        },
      },
    ],
  },
});
