import { afterAll, afterEach, expect } from 'vitest';
import type { Arch } from '../../src/core/index.ts';
import { createTestHost, leftovers, type TestHost } from './test-host.ts';

/** One step of a test's cleanup; a value that is undefined (a test that made nothing) is skipped. */
export type Cleanup = () => unknown;

/**
 * The leak check of an integration file (STYLE.md 13): after each test (`'each'`) or after the
 * file (`'all'`) it runs `cleanups` in order, every one even when another throws, then fails if
 * archway left anything on the host (`leftovers()`: a container, snapshot, bundle, uid or network
 * lease, cgroup), and last with the first cleanup's error, if any.
 */
export function checkLeftovers(when: 'each' | 'all', ...cleanups: Cleanup[]): void {
  (when === 'each' ? afterEach : afterAll)(async () => {
    const failed: unknown[] = [];
    for (const step of cleanups) {
      try {
        await step();
      } catch (e) {
        failed.push(e);
      }
    }
    expect(await leftovers(), 'left on the host').toEqual([]);
    if (failed.length) throw failed[0];
  });
}

/** Test hosts a test makes as it goes; `close()` closes their launchers (and so their warm pools). */
export interface TestHosts {
  host(arch: Arch, opts?: Parameters<typeof createTestHost>[1]): Promise<TestHost>;
  close(): Promise<void>;
}

export function testHosts(): TestHosts {
  const made: TestHost[] = [];
  return {
    async host(arch, opts) {
      const h = await createTestHost(arch, opts);
      made.push(h);
      return h;
    },
    async close() {
      for (const h of made.splice(0)) await h.launcher.close();
    },
  };
}
