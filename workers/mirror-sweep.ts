import { spawn } from 'node:child_process';
import { readdir, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AbortedError,
  HOST_ENV,
  HostCommandError,
  type Logger,
  poolLayout,
  runCommand,
  toError,
} from '../src/core/index.ts';

/**
 * A mirror's use lock is `<mirror>.use`: every job that fetches from or places out of a mirror
 * holds it shared for as long as it does, and its mtime is when the mirror was last used; the
 * sweep removes a mirror only while it holds the lock exclusively (and never waits for it).
 */
const useFile = (mirror: string) => `${mirror}.use`;

/** Exit status of the sweep's flock when a job holds the mirror. */
const BUSY = 75;

/**
 * Holds `mirror`'s use lock shared until the returned release is called (or this process ends:
 * the holder is a `cat` on a pipe of ours, so the lock goes with us), and marks the mirror used.
 * The holder prints the inode it locked; a lock file the sweep removed meanwhile is locked again.
 */
export async function holdMirror(mirror: string, signal: AbortSignal): Promise<() => void> {
  for (let i = 0; ; i++) {
    const child = spawn(
      'sh',
      [
        '-c',
        'exec 9>>"$1" && flock -s -w 600 9 && stat -L -c %i /proc/self/fd/9 && exec cat >/dev/null',
        'archway-mirror-use',
        useFile(mirror),
      ],
      { env: { ...HOST_ENV }, stdio: ['pipe', 'pipe', 'pipe'], signal },
    );
    child.on('error', () => undefined);
    child.stdin.on('error', () => undefined);
    const release = () => {
      child.stdin.end();
    };
    const inode = await new Promise<string | undefined>((resolve) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve(out.trim());
      });
      child.once('exit', () => resolve(undefined));
    });
    if (signal.aborted) {
      release();
      throw new AbortedError('waiting for a git mirror', signal.reason);
    }
    if (inode === undefined)
      throw new HostCommandError(
        'flock (git mirror use lock)',
        child.exitCode ?? undefined,
        'could not lock',
      );
    const now = await stat(useFile(mirror)).catch(() => undefined);
    if (now && String(now.ino) === inode) {
      const t = new Date();
      await utimes(useFile(mirror), t, t).catch(() => undefined);
      return release;
    }
    // The sweep removed the file between our open and our lock: lock the new one.
    release();
    if (i >= 5)
      throw new HostCommandError('flock (git mirror use lock)', undefined, 'the lock file keeps changing');
  }
}

export interface MirrorSweepOptions {
  /** The btrfs pool: mirrors are `<pool>/cache/git/<host>/<path>.git`. */
  poolPath: string;
  /** A mirror not used for this long is removed, in ms (ARCHWAY_GIT_MIRROR_RETENTION_HOURS). */
  retentionMs: number;
  /** Beyond this many bytes of mirrors in all, the least recently used go first (ARCHWAY_GIT_MIRROR_MAX_BYTES). */
  maxBytes: number;
  /** How often `start()` sweeps, in ms. Default 10 minutes. */
  intervalMs?: number;
  logger: Logger;
}

/** One mirror as the sweep sees it. */
export interface MirrorInfo {
  path: string;
  /** When a job last used it (its use lock's mtime; the mirror's own before any job did). */
  usedMs: number;
  bytes: number;
}

export interface MirrorSweep {
  /** The pool's mirrors, least recently used first. */
  list(): Promise<MirrorInfo[]>;
  /**
   * Removes the mirrors unused for longer than the retention, then, while the mirrors take more
   * than `maxBytes`, the least recently used; never one a job holds. Returns the removed paths.
   */
  sweep(now?: number): Promise<string[]>;
  /** Sweeps now and every `intervalMs`. */
  start(): void;
  close(): Promise<void>;
}

/** Removes the git mirrors of a pool that no job uses any more (each upload is a mirror of its own). */
export function createMirrorSweep(o: MirrorSweepOptions): MirrorSweep {
  const root = poolLayout(o.poolPath).gitMirrors;
  const log = o.logger.child({ component: 'mirror-sweep' });
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<unknown> | undefined;

  async function find(dir: string, depth: number, out: string[]): Promise<void> {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const p = join(dir, e.name);
      if (e.name.endsWith('.git') && (await stat(join(p, 'HEAD')).catch(() => undefined))) out.push(p);
      else if (depth < 8) await find(p, depth + 1, out);
    }
  }

  async function list(): Promise<MirrorInfo[]> {
    const paths: string[] = [];
    await find(root, 0, paths);
    const infos: MirrorInfo[] = [];
    for (const path of paths) {
      const used =
        (await stat(useFile(path)).catch(() => undefined)) ?? (await stat(path).catch(() => undefined));
      if (!used) continue;
      const du = await runCommand('du', ['-s', '-b', '--', path]).catch(() => '0');
      infos.push({ path, usedMs: used.mtimeMs, bytes: Number(du.split('\t')[0]) || 0 });
    }
    return infos.sort((a, b) => a.usedMs - b.usedMs);
  }

  /** Removes a mirror and its lock files under its use lock, or leaves it when a job holds it. */
  async function remove(path: string): Promise<boolean> {
    try {
      await runCommand('sh', [
        '-c',
        `exec 9>>"$1.use" && { flock -n -x 9 || exit ${BUSY}; } && rm -rf -- "$1" "$1.lock" "$1.use"`,
        'archway-mirror-sweep',
        path,
      ]);
      return true;
    } catch (e) {
      if (e instanceof HostCommandError && e.exitCode === BUSY) return false;
      throw e;
    }
  }

  async function sweep(now = Date.now()): Promise<string[]> {
    const mirrors = await list();
    let total = mirrors.reduce((n, m) => n + m.bytes, 0);
    const removed: string[] = [];
    for (const m of mirrors) {
      const expired = now - m.usedMs > o.retentionMs;
      if (!expired && total <= o.maxBytes) break;
      if (await remove(m.path)) {
        total -= m.bytes;
        removed.push(m.path);
      }
    }
    if (removed.length > 0)
      log.info({ removed: removed.length, bytesLeft: total }, 'removed unused git mirrors');
    return removed;
  }

  const tick = () => {
    running ??= sweep()
      .catch((e: unknown) => log.warn({ err: toError(e).message }, 'sweeping git mirrors failed'))
      .finally(() => {
        running = undefined;
      });
  };

  return {
    list,
    sweep,
    start() {
      tick();
      timer = setInterval(tick, o.intervalMs ?? 600_000);
      timer.unref();
    },
    async close() {
      if (timer) clearInterval(timer);
      timer = undefined;
      await running;
    },
  };
}
