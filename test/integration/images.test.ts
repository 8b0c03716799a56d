import { chmod, link, lstat, mkdir, mkdtemp, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createImageStore, KEPT_VERSIONS, pruneVersions } from '../../images/index.ts';
import { shiftOwners } from '../../images/shift-owners.ts';
import {
  ARCHES,
  createLogger,
  createSubvolume,
  deleteSubvolume,
  isSubvolume,
  runCommand,
} from '../../src/core/index.ts';
import { testConfig } from '../support/test-host.ts';

describe('images', () => {
  it('busybox is held for every arch as a read-only subvolume owned by the shifted root, with a digest', async () => {
    const store = createImageStore({ poolPath: testConfig().ARCHWAY_POOL_PATH });
    for (const arch of ARCHES) {
      const img = await store.resolve('busybox', arch);
      expect(img.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(img.sizeBytes).toBeGreaterThan(500_000);
      const st = await stat(join(img.path, 'bin/busybox'));
      expect(st.uid).toBe(testConfig().ARCHWAY_UID_BASE);
      expect(await runCommand('btrfs', ['property', 'get', '-ts', img.path, 'ro'])).toBe('ro=true');
      // Pinning the digest resolves to the same version.
      expect((await store.resolve(`busybox@${img.digest}`, arch)).path).toBe(img.path);
    }
  });

  it('shifting owners keeps setuid bits and file capabilities, and shifts a hard-linked file once', async () => {
    const root = await mkdtemp(join(tmpdir(), 'archway-shift-'));
    try {
      await mkdir(join(root, 'bin'));
      await writeFile(join(root, 'bin/su'), 'x');
      await chmod(join(root, 'bin/su'), 0o4755);
      await writeFile(join(root, 'bin/ping'), 'x');
      await runCommand('setcap', ['cap_net_raw+ep', join(root, 'bin/ping')]);
      await link(join(root, 'bin/su'), join(root, 'bin/su-again'));
      await symlink('su', join(root, 'bin/su-link'));
      await writeFile(join(root, 'user-file'), 'x');
      await runCommand('chown', ['1000:1000', join(root, 'user-file')]);

      await shiftOwners(root, 100000);

      const su = await stat(join(root, 'bin/su'));
      expect(su.uid).toBe(100000);
      expect(su.mode & 0o7777).toBe(0o4755);
      expect((await lstat(join(root, 'bin/su-link'))).uid).toBe(100000);
      expect((await stat(join(root, 'user-file'))).uid).toBe(101000);
      // getcap prints [rootid=N] for a v3 (namespaced) capability
      expect(await runCommand('getcap', ['-n', join(root, 'bin/ping')])).toMatch(
        /cap_net_raw[=+]ep.*\[rootid=100000\]/,
      );
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('a build keeps the current version and the one before it, and older ones only while a container uses them', async () => {
    // A store of its own on the test pool's btrfs, out of the workers' sight.
    const poolPath = join(testConfig().ARCHWAY_POOL_PATH, 'jobs', `prune-test-${process.pid}`);
    const store = createImageStore({ poolPath });
    const dir = store.dirOf('prunetest', 'amd64');
    await mkdir(dir, { recursive: true });
    const digests = [1, 2, 3, 4].map((n) => `sha256:${String(n).repeat(64)}`);
    try {
      for (const [i, digest] of digests.entries()) {
        await createSubvolume(join(dir, digest));
        await store.commit({
          name: 'prunetest',
          arch: 'amd64',
          digest,
          sizeBytes: 1,
          createdAt: new Date(Date.UTC(2026, 0, 1 + i)).toISOString(),
          description: '',
        });
      }
      const [v1, v2, v3, v4] = digests as [string, string, string, string];
      // v4 is current, v3 the one before; a container was made from v1.
      const removed = await pruneVersions(
        store,
        'prunetest',
        'amd64',
        async () => new Set([v1]),
        createLogger({ name: 'test', level: 'silent' }),
      );
      expect(KEPT_VERSIONS).toBe(2);
      expect(removed).toEqual([v2]);
      const left = (await store.list()).map((v) => [v.digest, v.current]);
      expect(left.sort()).toEqual(
        [
          [v1, false],
          [v3, false],
          [v4, true],
        ].sort(),
      );
      expect(await isSubvolume(join(dir, v2))).toBe(false);
      // Once no container uses it, the next build's prune takes v1 too; never the current one.
      expect(
        await pruneVersions(
          store,
          'prunetest',
          'amd64',
          async () => new Set(),
          createLogger({ name: 'test', level: 'silent' }),
        ),
      ).toEqual([v1]);
      expect((await store.list()).map((v) => v.digest).sort()).toEqual([v3, v4].sort());
    } finally {
      for (const d of digests) if (await isSubvolume(join(dir, d))) await deleteSubvolume(join(dir, d));
      await rm(poolPath, { recursive: true, force: true });
    }
  });
});
