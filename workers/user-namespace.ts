import { spawn } from 'node:child_process';
import { readlink, writeFile } from 'node:fs/promises';
import type { IdRange } from '../images/index.ts';
import { HOST_ENV, HostCommandError, runCommand } from '../src/core/index.ts';

/** Where a host's uid ranges start and how big each is. */
export interface IdRangeLayout {
  base: number;
  size: number;
  /** How many ranges the host hands out. */
  count: number;
}

/** Range `index` of `layout`: container root maps to base + index * size. */
export function idRangeOf(layout: IdRangeLayout, index: number): IdRange {
  const shift = index * layout.size;
  return { index, shift, hostId: layout.base + shift };
}

/** The largest uid a container's root can have: Node starts processes only as int32 uids. */
export const MAX_ID = 2 ** 31 - 1;

/** Why a layout cannot be used, or undefined when it can: every id of every range must be at most MAX_ID. */
export function idRangeLayoutProblem(layout: IdRangeLayout): string | undefined {
  const last = layout.base + layout.count * layout.size - 1;
  // The kernel takes uids up to 2^32 - 2, but the namespace holder is spawned as the range's root
  // uid, and Node's spawn() accepts int32 uids only.
  if (last > MAX_ID)
    return `ARCHWAY_UID_BASE + ARCHWAY_UID_RANGES * ARCHWAY_UID_SIZE - 1 = ${last} is past the largest uid archway can use (${MAX_ID})`;
  return undefined;
}

/**
 * Limits on kernel objects counted per user in each container's user namespace
 * (`/proc/sys/user/max_*`). They count per uid inside the container; the container as a whole is
 * also bounded by the host's own per-user limits, since its user namespace belongs to its root's
 * host uid (see createUserNamespace).
 */
export interface UcountLimits {
  inotifyInstances: number;
  inotifyWatches: number;
  fanotifyGroups: number;
  fanotifyMarks: number;
  /** Every kind of nested namespace (user, mnt, pid, net, ipc, uts, cgroup, time). */
  namespaces: number;
}

const NAMESPACE_KINDS = ['cgroup', 'ipc', 'mnt', 'net', 'pid', 'time', 'user', 'uts'] as const;

/** The `sysctl -w` assignments of `limits`. */
export function ucountSysctls(limits: UcountLimits): string[] {
  return [
    `user.max_inotify_instances=${limits.inotifyInstances}`,
    `user.max_inotify_watches=${limits.inotifyWatches}`,
    `user.max_fanotify_groups=${limits.fanotifyGroups}`,
    `user.max_fanotify_marks=${limits.fanotifyMarks}`,
    ...NAMESPACE_KINDS.map((k) => `user.max_${k}_namespaces=${limits.namespaces}`),
  ];
}

/**
 * Sets `limits` in the user namespace of the process `pid` (a container's init). These sysctls
 * are per user namespace and are looked up in the namespace of the process that opens them, so
 * the writer has to enter it (as host root it holds CAP_SYS_RESOURCE there); the container's own
 * processes cannot change them (no CAP_SYS_RESOURCE, and /proc/sys is read-only to them).
 */
export async function limitUcounts(pid: number, limits: UcountLimits, timeoutMs: number): Promise<void> {
  await runCommand(
    'nsenter',
    ['--target', String(pid), '--user', '--', 'sysctl', '-q', '-e', '-w', ...ucountSysctls(limits)],
    { timeoutMs, label: 'sysctl user.max_* in the container' },
  );
}

/** A user namespace made for one container, held open until the container's init has joined it. */
export interface HeldUserNamespace {
  /** `/proc/<holder>/ns/user`, for the OCI spec's user namespace `path`. */
  readonly path: string;
  /** Lets the holder go (its namespace lives on in the container). Idempotent. */
  close(): void;
}

/**
 * Makes the user namespace of a container whose root is host uid `hostId`: created by a process
 * running as `hostId` itself, then mapped (0 -> hostId, `size` ids) by host root. The kernel
 * charges a namespace's inotify instances, watches and nested namespaces to its owner in the
 * parent namespace as well (kernel/ucount.c, inc_ucount walks up to the owner); with runc
 * creating the namespace as root, every container's would add up in host root's count, and a job
 * switching uids inside would pass any per-uid limit. Owned by `hostId`, a container's total is
 * bounded by the host's per-user limit for its own uid, which no other job and no host process shares.
 */
export async function createUserNamespace(
  hostId: number,
  size: number,
  timeoutMs: number,
): Promise<HeldUserNamespace> {
  const mine = await readlink('/proc/self/ns/user');
  // `cat` on a pipe: the holder ends when we close it, or when this process dies.
  const holder = spawn('unshare', ['--user', '--', 'cat'], {
    uid: hostId,
    gid: hostId,
    env: HOST_ENV,
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  let stderr = '';
  holder.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  let exited = false;
  holder.once('exit', () => {
    exited = true;
  });
  // Without a listener, a holder that cannot start (no unshare on PATH) would crash the process.
  holder.once('error', (err) => {
    exited = true;
    stderr ||= err.message;
  });
  const close = () => {
    holder.stdin?.destroy();
    if (!exited) holder.kill('SIGKILL');
  };
  try {
    const pid = holder.pid;
    if (pid === undefined) throw new HostCommandError('unshare --user', undefined, 'could not start');
    const path = `/proc/${pid}/ns/user`;
    const until = Date.now() + timeoutMs;
    // unshare(1) makes the namespace, then execs cat: wait until its namespace is not ours.
    for (;;) {
      const ns = await readlink(path).catch(() => mine);
      if (ns !== mine) break;
      if (exited || Date.now() > until)
        throw new HostCommandError(
          'unshare --user',
          holder.exitCode ?? undefined,
          stderr || 'no namespace made',
        );
      await new Promise((r) => setTimeout(r, 1));
    }
    const map = `0 ${hostId} ${size}\n`;
    await writeFile(`/proc/${pid}/uid_map`, map);
    await writeFile(`/proc/${pid}/gid_map`, map);
    return { path, close };
  } catch (e) {
    close();
    throw e;
  }
}
