import { mkdir, readdir, readFile, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import {
  type Arch,
  Arch as ArchSchema,
  ArchwayError,
  Digest,
  deleteSubvolume,
  ImageName,
  ImageNotFoundError,
  ImageRef,
  InvalidInputError,
  isSubvolume,
  poolLayout,
} from '../src/core/index.ts';
import { removeRangeCopies } from './range-copies.ts';

/** What is recorded of one built version of an image for one arch. */
export const ImageVersion = z.object({
  name: ImageName,
  arch: ArchSchema,
  digest: Digest,
  /** Apparent size of the tree, in bytes. */
  sizeBytes: z.number().int().nonnegative(),
  createdAt: z.iso.datetime(),
  /** The recipe's description, for listings. */
  description: z.string().default(''),
});
export type ImageVersion = z.infer<typeof ImageVersion>;

/** An image version on this host, with the path of its read-only subvolume. */
export interface ResolvedImage extends ImageVersion {
  path: string;
}

export interface ImageStoreOptions {
  /** The pool's root; images live in `<poolPath>/images/<name>/<arch>/<digest>`. */
  poolPath: string;
}

export interface ImageStore {
  readonly root: string;
  /** The version a reference names for `arch`: its current one, or the digest it pins. */
  resolve(ref: string, arch: Arch): Promise<ResolvedImage>;
  /** Every version held, with `current` set on the one new jobs get. */
  list(): Promise<(ResolvedImage & { current: boolean })[]>;
  /** Directory where the versions of one image for one arch live. */
  dirOf(name: string, arch: Arch): string;
  /** Records a built version (its subvolume already at `dirOf(name, arch)/<digest>`) and makes it current. */
  commit(version: ImageVersion): Promise<ResolvedImage>;
  /**
   * Removes a version that is not current: its record first (so it stops resolving), then its
   * shifted copies (one per uid range that used it) and its subvolume. Containers already made from it are snapshots of their own and are not affected.
   */
  remove(name: string, arch: Arch, digest: string): Promise<void>;
}

export function createImageStore(opts: ImageStoreOptions): ImageStore {
  const root = poolLayout(opts.poolPath).images;
  const dirOf = (name: string, arch: Arch) => join(root, name, arch);

  async function readVersion(name: string, arch: Arch, digest: string): Promise<ResolvedImage | undefined> {
    const dir = dirOf(name, arch);
    try {
      const meta = ImageVersion.parse(JSON.parse(await readFile(join(dir, `${digest}.json`), 'utf8')));
      const path = join(dir, digest);
      return (await isSubvolume(path)) ? { ...meta, path } : undefined;
    } catch {
      return undefined;
    }
  }

  async function currentDigest(name: string, arch: Arch): Promise<string | undefined> {
    return readlink(join(dirOf(name, arch), 'current')).catch(() => undefined);
  }

  /** Names of the images that have a current version for `arch`: what an error about a missing one lists. */
  async function heldNames(arch: Arch): Promise<string[]> {
    const names = (await readdir(root).catch(() => [] as string[])).sort();
    const held = await Promise.all(names.map(async (n) => ((await currentDigest(n, arch)) ? n : undefined)));
    return held.filter((n): n is string => n !== undefined);
  }

  return {
    root,
    dirOf,
    async resolve(refText, arch) {
      const parsed = ImageRef.safeParse(refText);
      if (!parsed.success)
        throw new InvalidInputError('image', parsed.error.issues[0]?.message ?? 'invalid image');
      const ref = parsed.data;
      const digest = ref.digest ?? (await currentDigest(ref.name, arch));
      const found = digest ? await readVersion(ref.name, arch, digest) : undefined;
      if (!found) {
        const what = ref.digest ? `${ref.name}@${ref.digest}` : `'${ref.name}'`;
        const held = await heldNames(arch);
        throw new ImageNotFoundError(
          `no image ${what} for ${arch} on this host (${held.length ? `it has: ${held.join(', ')}` : `it has none for ${arch}`}): build it with 'bin/archway images build ${ref.name} --arch ${arch}'`,
        );
      }
      return found;
    },
    async list() {
      const out: (ResolvedImage & { current: boolean })[] = [];
      for (const name of (await readdir(root).catch(() => [] as string[])).sort()) {
        for (const arch of (await readdir(join(root, name)).catch(() => [] as string[])).sort()) {
          if (!ArchSchema.safeParse(arch).success) continue;
          const a = arch as Arch;
          const current = await currentDigest(name, a);
          for (const entry of await readdir(dirOf(name, a)).catch(() => [] as string[])) {
            if (!entry.endsWith('.json')) continue;
            const v = await readVersion(name, a, entry.slice(0, -5));
            if (v) out.push({ ...v, current: v.digest === current });
          }
        }
      }
      return out;
    },
    async commit(version) {
      const dir = dirOf(version.name, version.arch);
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, `${version.digest}.json`), `${JSON.stringify(version, null, 2)}\n`);
      // Switch `current` atomically: a new symlink renamed over the old one.
      const tmp = join(dir, `.current-${process.pid}-${Date.now()}`);
      await rm(tmp, { force: true });
      await symlink(version.digest, tmp);
      await rename(tmp, join(dir, 'current'));
      const resolved = await readVersion(version.name, version.arch, version.digest);
      if (!resolved)
        throw new ImageNotFoundError(
          `image ${version.name}@${version.digest} was recorded but its subvolume is missing`,
        );
      return resolved;
    },
    async remove(name, arch, digest) {
      if (!Digest.safeParse(digest).success || !ImageName.safeParse(name).success)
        throw new InvalidInputError('image', `invalid image version ${name}@${digest}`);
      if ((await currentDigest(name, arch)) === digest)
        throw new ArchwayError('IMAGE_IN_USE', `${name}@${digest} is the current version for ${arch}`, {
          httpStatus: 409,
        });
      const dir = dirOf(name, arch);
      await rm(join(dir, `${digest}.json`), { force: true });
      await removeRangeCopies(join(dir, digest));
      if (await isSubvolume(join(dir, digest))) await deleteSubvolume(join(dir, digest));
    },
  };
}
