import { createImageStore, ensureImage } from '../../images/index.ts';
import { ARCHES, createLogger, ensurePool, poolLayout } from '../../src/core/index.ts';
import { createTestHost, testConfig } from '../support/test-host.ts';

/**
 * Once per run: the test pool (a loop-backed btrfs file when its path is not btrfs) and the busybox
 * image for every arch, built only when missing. The apt cache in the pool keeps rebuilds offline-fast.
 */
export default async function setup(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('integration tests need root (btrfs, loop devices, runc)');
  const config = testConfig();
  const logger = createLogger({ name: 'test-setup', level: 'warn' });
  await ensurePool({ path: config.ARCHWAY_POOL_PATH, loopSizeGiB: config.ARCHWAY_POOL_SIZE_GIB, logger });
  const store = createImageStore({ poolPath: config.ARCHWAY_POOL_PATH });
  // A run killed half-way leaves containers behind: reap them, as a worker does when it starts.
  const { runtime } = await createTestHost('amd64');
  await runtime.reap({});
  for (const arch of ARCHES) {
    await ensureImage('busybox', arch, {
      store,
      cacheDir: poolLayout(config.ARCHWAY_POOL_PATH).cache,
      idBase: config.ARCHWAY_UID_BASE,
      mirror: config.ARCHWAY_DEBIAN_MIRROR,
      logger,
    });
  }
}
