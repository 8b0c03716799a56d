import { mkdir, open } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { HostRequirementError } from '../errors/host-requirement-error.ts';
import { enableQuota, isBtrfs } from './btrfs.ts';
import { exists } from './exists.ts';
import { poolLayout } from './pool-layout.ts';
import { runCommand } from './run-command.ts';

export interface EnsurePoolOptions {
  /** Where the pool lives. Default (from config) /var/lib/archway. */
  path: string;
  /** Size of the sparse loop-backed file made when `path` is not on btrfs, in GiB. */
  loopSizeGiB: number;
  logger: Logger;
}

export interface PoolMount {
  path: string;
  /** The backing file when the pool is a loop-mounted file archway made; undefined when `path` was btrfs already. */
  loopFile: string | undefined;
}

/**
 * Makes sure `path` is on btrfs with quotas on. When it is not, creates (once) a sparse file
 * `<path>.btrfs` beside it, formats it btrfs, and loop-mounts it at `path`. Idempotent: a second
 * call, or a restart, finds the mount (or the file) and reuses it.
 */
export async function ensurePool(opts: EnsurePoolOptions): Promise<PoolMount> {
  const { path, logger } = opts;
  await mkdir(path, { recursive: true });
  let loopFile: string | undefined;
  if (!(await isBtrfs(path))) {
    loopFile = `${path.replace(/\/+$/, '')}.btrfs`;
    if (!(await exists(loopFile))) {
      await mkdir(dirname(loopFile), { recursive: true });
      const fh = await open(loopFile, 'wx');
      try {
        await fh.truncate(opts.loopSizeGiB * 1024 ** 3);
      } finally {
        await fh.close();
      }
      await runCommand('mkfs.btrfs', ['-q', '-L', 'archway', loopFile]);
      logger.info(
        { path, loopFile, sizeGiB: opts.loopSizeGiB },
        'pool path is not on btrfs: created a sparse loop-backed btrfs file',
      );
    }
    try {
      await runCommand('mount', ['-o', 'loop,noatime', loopFile, path]);
    } catch (e) {
      throw new HostRequirementError(
        `cannot loop-mount ${loopFile} at ${path}: ${(e as Error).message}`,
        'run as root on a kernel with btrfs and loop devices (modprobe btrfs loop); see bin/archway doctor',
      );
    }
    logger.info({ path, loopFile }, 'pool path is not on btrfs: mounted the loop-backed btrfs file there');
  }
  await enableQuota(path);
  for (const dir of poolLayout(path).dirs) await mkdir(dir, { recursive: true });
  return { path, loopFile };
}
