import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  deleteSubvolume,
  isSubvolume,
  processIdentity,
  setReadonly,
  snapshotSubvolume,
} from '../src/core/index.ts';
import type { ResolvedImage } from './image-store.ts';
import { shiftOwners } from './shift-owners.ts';

/** One uid range of a host: container root maps to `hostId`, which is the uid base plus `shift`. */
export interface IdRange {
  index: number;
  /** How far this range lies above range 0 (index * size). */
  shift: number;
  /** Host uid (and gid) of container root in this range: the owner of its files, the rootid of its file capabilities. */
  hostId: number;
}

/** Shifted copies of a version live beside it: `<digest>.ranges/<index>`. */
const RANGES_SUFFIX = '.ranges';
const MAKING_PREFIX = '.making-';

/**
 * The version as a container of uid range `range` sees it: a tree whose root belongs to
 * `range.hostId`. The version itself when its owners already fit (range 0: they were shifted by
 * the uid base at build); any other range, or range 0 of a version built under another uid base
 * (the host's `ARCHWAY_UID_BASE` changed since), gets a read-only copy beside the version with
 * every owner moved by the difference, made once (a btrfs snapshot, then a chown pass: metadata
 * only, the data stays shared) and kept until the version is removed. A copy whose owners no
 * longer fit (the base changed after it was made) is made again.
 */
export async function imageForRange(image: Pick<ResolvedImage, 'path'>, range: IdRange): Promise<string> {
  const builtFor = await rootOwner(image.path);
  if (builtFor === range.hostId) return image.path;
  const ranges = `${image.path}${RANGES_SUFFIX}`;
  const path = join(ranges, String(range.index));
  if (await isSubvolume(path)) {
    if ((await rootOwner(path)) === range.hostId) return path;
    await deleteSubvolume(path);
  }
  await mkdir(ranges, { recursive: true, mode: 0o700 });
  await removeAbandoned(ranges);
  // Made aside and renamed into place: nobody snapshots a half-shifted tree, and of two processes
  // making the same copy one wins the rename and the other drops its own.
  const tmp = join(ranges, `${MAKING_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await snapshotSubvolume(image.path, tmp);
    await shiftOwners(tmp, range.hostId - builtFor, undefined, range.hostId);
    await setReadonly(tmp, true);
    await rename(tmp, path).catch(async (e: unknown) => {
      if (!(await isSubvolume(path))) throw e;
    });
  } finally {
    if (await isSubvolume(tmp)) await deleteSubvolume(tmp).catch(() => undefined);
  }
  return path;
}

/** The host uid that owns a tree's root: the uid its container root must map to. */
async function rootOwner(path: string): Promise<number> {
  return (await stat(path)).uid;
}

/** Deletes every shifted copy of the version at `versionPath` (its image store removes the version). */
export async function removeRangeCopies(versionPath: string): Promise<void> {
  const ranges = `${versionPath}${RANGES_SUFFIX}`;
  for (const entry of await readdir(ranges).catch(() => [] as string[])) {
    const p = join(ranges, entry);
    if (await isSubvolume(p)) await deleteSubvolume(p);
    else await rm(p, { recursive: true, force: true });
  }
  await rmdir(ranges).catch(() => undefined);
}

/** The ranges a version has a shifted copy for (range 0 not counted). */
export async function rangeCopiesOf(versionPath: string): Promise<number[]> {
  return (await readdir(`${versionPath}${RANGES_SUFFIX}`).catch(() => [] as string[]))
    .filter((e) => /^\d+$/.test(e))
    .map(Number)
    .sort((a, b) => a - b);
}

/** Copies that a process which is gone was making (a crash mid-shift). */
async function removeAbandoned(ranges: string): Promise<void> {
  for (const entry of await readdir(ranges).catch(() => [] as string[])) {
    if (!entry.startsWith(MAKING_PREFIX)) continue;
    const pid = Number(entry.slice(MAKING_PREFIX.length).split('-')[0]);
    if (pid === process.pid || (await processIdentity(pid))) continue;
    await deleteSubvolume(join(ranges, entry)).catch(() => undefined);
  }
}
