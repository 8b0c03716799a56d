import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { ImageStore, ResolvedImage } from '../../images/index.ts';
import {
  type Arch,
  deleteSubvolume,
  isSubvolume,
  setReadonly,
  snapshotSubvolume,
} from '../../src/core/index.ts';

/**
 * A new version of image `name` for `arch` made from `from` (a snapshot, so it shares every
 * extent with it, as a rebuild on top of the previous version would), with `files` (paths
 * relative to the root: contents, or a function given the root) written into it, made read-only,
 * recorded and made current.
 * Its digest names it uniquely; it is not the sha256 of a send stream as a build's is.
 */
export async function makeVersion(
  store: ImageStore,
  name: string,
  arch: Arch,
  from: ResolvedImage,
  files: Record<string, string | Uint8Array> | ((root: string) => Promise<void>) = {},
): Promise<ResolvedImage> {
  const dir = store.dirOf(name, arch);
  await mkdir(dir, { recursive: true });
  const staging = join(dir, `.make-${randomBytes(4).toString('hex')}`);
  await snapshotSubvolume(from.path, staging);
  try {
    if (typeof files === 'function') await files(staging);
    else
      for (const [path, content] of Object.entries(files)) {
        await mkdir(dirname(join(staging, path)), { recursive: true });
        await writeFile(join(staging, path), content);
      }
    await setReadonly(staging, true);
  } catch (e) {
    await deleteSubvolume(staging);
    throw e;
  }
  const digest = `sha256:${createHash('sha256').update(randomBytes(32)).digest('hex')}`;
  await rename(staging, join(dir, digest));
  return store.commit({
    name,
    arch,
    digest,
    sizeBytes:
      from.sizeBytes +
      (typeof files === 'function' ? 0 : Object.values(files).reduce((n, c) => n + c.length, 0)),
    createdAt: new Date().toISOString(),
    description: `${from.description} (test version)`,
  });
}

/** Deletes every version of image `name` (every arch) from the store, and its directories. */
export async function removeImage(store: ImageStore, name: string): Promise<void> {
  const root = join(store.root, name);
  for (const arch of await readdir(root).catch(() => [] as string[])) {
    for (const entry of await readdir(join(root, arch)).catch(() => [] as string[])) {
      const path = join(root, arch, entry);
      if (await isSubvolume(path)) await deleteSubvolume(path);
      else if ((await readdir(path).catch(() => undefined)) !== undefined) {
        // A staging directory: what is in it first.
        for (const inner of await readdir(path)) {
          if (await isSubvolume(join(path, inner))) await deleteSubvolume(join(path, inner));
        }
      }
    }
  }
  await rm(root, { recursive: true, force: true });
}
