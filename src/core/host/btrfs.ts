import { stat, statfs } from 'node:fs/promises';
import { HostCommandError } from '../errors/host-command-error.ts';
import { type RunCommandOptions, runCommand } from './run-command.ts';

const BTRFS_SUPER_MAGIC = 0x9123683e;

/** True when `path` lives on a btrfs filesystem. */
export async function isBtrfs(path: string): Promise<boolean> {
  try {
    return (await statfs(path)).type === BTRFS_SUPER_MAGIC;
  } catch {
    return false;
  }
}

type Ctl = Pick<RunCommandOptions, 'signal' | 'timeoutMs'>;

export async function createSubvolume(path: string, ctl: Ctl = {}): Promise<void> {
  await runCommand('btrfs', ['subvolume', 'create', path], ctl);
}

/** A writable (or, with `readonly`, read-only) snapshot of `source` at `dest`; O(1) in the tree's size. */
export async function snapshotSubvolume(
  source: string,
  dest: string,
  opts: { readonly?: boolean } & Ctl = {},
): Promise<void> {
  const args = ['subvolume', 'snapshot', ...(opts.readonly ? ['-r'] : []), source, dest];
  await runCommand('btrfs', args, opts);
}

export async function setReadonly(path: string, readonly: boolean, ctl: Ctl = {}): Promise<void> {
  await runCommand('btrfs', ['property', 'set', '-ts', path, 'ro', String(readonly)], ctl);
}

/**
 * Deletes a subvolume, and first any subvolumes nested in it: btrfs lets any user create a
 * subvolume inside one they can write (a job can), and the parent cannot be deleted while one remains.
 */
export async function deleteSubvolume(path: string, ctl: Ctl = {}): Promise<void> {
  try {
    await runCommand('btrfs', ['subvolume', 'delete', '--commit-after', path], ctl);
    return;
  } catch (e) {
    if (!(e instanceof HostCommandError)) throw e;
    const nested = await nestedSubvolumes(path, ctl);
    if (nested.length === 0) throw e;
    // Deepest first, so each parent is empty of subvolumes when its turn comes.
    for (const p of nested.sort((a, b) => b.length - a.length)) {
      await runCommand('btrfs', ['property', 'set', '-ts', p, 'ro', 'false'], ctl).catch(() => undefined);
      await runCommand('btrfs', ['subvolume', 'delete', p], ctl);
    }
    await runCommand('btrfs', ['subvolume', 'delete', '--commit-after', path], ctl);
  }
}

async function nestedSubvolumes(path: string, ctl: Ctl): Promise<string[]> {
  // `list -o` prints paths relative to the filesystem's top; `subvolume show` gives ours.
  const show = await runCommand('btrfs', ['subvolume', 'show', path], ctl);
  const self = show.split('\n')[0]?.trim() ?? '';
  const out = await runCommand('btrfs', ['subvolume', 'list', '-o', path], ctl);
  const paths: string[] = [];
  for (const line of out.split('\n')) {
    const rel = line.match(/ path (.+)$/)?.[1];
    if (!rel) continue;
    const under = self && rel.startsWith(`${self}/`) ? rel.slice(self.length + 1) : rel;
    paths.push(`${path}/${under}`);
  }
  return paths;
}

/** True when `path` is the root of a btrfs subvolume (inode 256 on btrfs). */
export async function isSubvolume(path: string): Promise<boolean> {
  try {
    const st = await stat(path);
    return st.ino === 256 && (await isBtrfs(path));
  } catch {
    return false;
  }
}

/** Turns on btrfs quota groups for the filesystem at `path` (idempotent). */
export async function enableQuota(path: string, ctl: Ctl = {}): Promise<void> {
  await runCommand('btrfs', ['quota', 'enable', path], ctl);
}

/** Limits the bytes written into the subvolume at `path` beyond what it shares with its origin. */
export async function limitExclusive(path: string, bytes: number, ctl: Ctl = {}): Promise<void> {
  await runCommand('btrfs', ['qgroup', 'limit', '-e', String(bytes), path], ctl);
}

/** Deletes the qgroup of a deleted subvolume (by id), so quota accounting does not grow without end. */
export async function destroyQgroup(fsPath: string, subvolId: string, ctl: Ctl = {}): Promise<void> {
  await runCommand('btrfs', ['qgroup', 'destroy', `0/${subvolId}`, fsPath], ctl).catch(() => undefined);
}
