import { chmod, link, lstat, mkdir, mkdtemp, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createImageStore } from '../../images/index.ts';
import { shiftOwners } from '../../images/shift-owners.ts';
import { ARCHES, runCommand } from '../../src/core/index.ts';
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
});
