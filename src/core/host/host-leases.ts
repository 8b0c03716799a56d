import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rmdir, stat, unlink, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { LeasesExhaustedError } from '../errors/leases-exhausted-error.ts';

/**
 * A process as the kernel knows it: its pid and its start time in clock ticks since boot
 * (/proc/PID/stat field 22), which tells a reused pid apart.
 */
export interface ProcessIdentity {
  pid: number;
  start: string;
}

/** Who holds a lease: the process that took it and, once it runs, the container's init. */
export interface LeaseHolder {
  /** What the lease is for (a container id). */
  id: string;
  owner: ProcessIdentity;
  /** The container's init, once started: a lease outlives its owner while its container runs. */
  init?: ProcessIdentity;
}

export interface HostLeasesOptions {
  /**
   * Directory of the lease files, one per index. Host-wide resources (a uid range, an address
   * block) must use one directory per host, whatever pool or run dir a process uses.
   */
  dir: string;
  /** Indexes 0 .. size-1 exist. */
  size: number;
  /** What the indexes stand for, in errors (`uid ranges`). Default: the directory's name. */
  what?: string;
}

export interface HostLeases {
  /** Takes the lowest free index for `holder`; throws `LeasesExhaustedError` when all are held. */
  acquire(holder: LeaseHolder): Promise<number>;
  /** Records the container's init against a lease this process holds. */
  update(index: number, holder: LeaseHolder): Promise<void>;
  /** Gives the lease back when `id` still holds it. Idempotent. */
  release(index: number, id: string): Promise<void>;
  /** Every lease and who holds it. */
  list(): Promise<Map<number, LeaseHolder>>;
}

const LOCK_STALE_MS = 10_000;

/**
 * Indexes handed out to containers across every process of a host, as files made with O_EXCL:
 * taking a free index needs no lock. A lease whose owner and container are both gone is stale;
 * it is reclaimed under a directory lock, so two processes never both reclaim one index.
 */
export function createHostLeases(o: HostLeasesOptions): HostLeases {
  const fileOf = (i: number) => join(o.dir, String(i));
  const lockDir = join(o.dir, '.reclaim.lock');
  let made: Promise<unknown> | undefined;
  const ensureDir = () => {
    made ??= mkdir(o.dir, { recursive: true, mode: 0o700 });
    return made;
  };

  async function read(i: number): Promise<LeaseHolder | undefined> {
    try {
      return JSON.parse(await readFile(fileOf(i), 'utf8')) as LeaseHolder;
    } catch {
      return undefined;
    }
  }

  async function tryCreate(i: number, holder: LeaseHolder): Promise<boolean> {
    try {
      await writeFile(fileOf(i), JSON.stringify(holder), { flag: 'wx', mode: 0o600 });
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw e;
    }
  }

  async function withReclaimLock<T>(fn: () => Promise<T>): Promise<T> {
    for (;;) {
      try {
        await mkdir(lockDir);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        // A holder that died mid-reclaim leaves the lock: old enough, it is taken over.
        const age = await stat(lockDir).then(
          (s) => Date.now() - s.mtimeMs,
          () => 0,
        );
        if (age > LOCK_STALE_MS) await rmdir(lockDir).catch(() => undefined);
        else await new Promise((r) => setTimeout(r, 5 + Math.random() * 20));
      }
    }
    try {
      return await fn();
    } finally {
      await rmdir(lockDir).catch(() => undefined);
    }
  }

  return {
    async acquire(holder) {
      await ensureDir();
      const held = new Set((await readdir(o.dir)).filter((n) => /^\d+$/.test(n)).map((n) => Number(n)));
      for (let i = 0; i < o.size; i++) {
        if (!held.has(i) && (await tryCreate(i, holder))) return i;
      }
      // All taken, or lost races: reclaim what dead holders left, then try once more.
      const reclaimed = await withReclaimLock(async () => {
        const freed: number[] = [];
        for (let i = 0; i < o.size; i++) {
          const h = await read(i);
          if (h && !(await leaseHolderAlive(h))) {
            await unlink(fileOf(i)).catch(() => undefined);
            freed.push(i);
          }
        }
        return freed;
      });
      for (const i of [...reclaimed, ...Array.from({ length: o.size }, (_, k) => k)]) {
        if (await tryCreate(i, holder)) return i;
      }
      throw new LeasesExhaustedError(o.what ?? basename(o.dir), o.size);
    },
    async update(index, holder) {
      const current = await read(index);
      if (current?.id !== holder.id) return;
      // Written aside then renamed: a reader never sees half a record.
      const tmp = `${fileOf(index)}.${randomBytes(4).toString('hex')}.tmp`;
      await writeFile(tmp, JSON.stringify(holder), { mode: 0o600 });
      await rename(tmp, fileOf(index));
    },
    async release(index, id) {
      const current = await read(index);
      if (current?.id === id) await unlink(fileOf(index)).catch(() => undefined);
    },
    async list() {
      await ensureDir();
      const out = new Map<number, LeaseHolder>();
      for (const name of await readdir(o.dir)) {
        if (!/^\d+$/.test(name)) continue;
        const h = await read(Number(name));
        if (h) out.set(Number(name), h);
      }
      return out;
    },
  };
}

/** Reads a process's identity; undefined when it does not exist. */
export async function processIdentity(pid: number): Promise<ProcessIdentity | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    return { pid, start: stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '' };
  } catch {
    return undefined;
  }
}

/** True while the process with this identity lives (a reused pid does not count). */
export async function processAlive(p: ProcessIdentity): Promise<boolean> {
  return (await processIdentity(p.pid))?.start === p.start;
}

/** True while the lease's taker, or the container's init it recorded, lives. */
export async function leaseHolderAlive(h: LeaseHolder): Promise<boolean> {
  if (await processAlive(h.owner)) return true;
  return h.init ? processAlive(h.init) : false;
}
