import { type ChildProcess, spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { HOST_ENV, HostCommandError } from '../src/core/index.ts';

/** A host command whose stdin or stdout is a stream (a stage of a `btrfs send | zstd` pipeline). */
export interface HostPipe {
  readonly proc: ChildProcess;
  /** Settles when the command has exited: rejects with HostCommandError (its stderr's tail) unless it exited 0. */
  readonly done: Promise<void>;
  /** SIGKILL; the caller then awaits `done` (which rejects). */
  kill(): void;
}

const STDERR_KEPT = 8192;

/**
 * Starts `file` with HOST_ENV only. `stdin` is 'pipe' (the caller writes), 'ignore', or the stdout
 * of an earlier stage (handed to the child directly, so the bytes never pass through node).
 * stdout is a pipe unless `stdout: 'ignore'`.
 */
export function spawnHostPipe(
  file: string,
  args: readonly string[],
  o: { stdin: 'pipe' | 'ignore' | Readable; stdout?: 'pipe' | 'ignore'; label?: string },
): HostPipe {
  const label = o.label ?? `${file} ${args[0] ?? ''}`.trim();
  const proc = spawn(file, args, {
    env: HOST_ENV,
    stdio: [o.stdin, o.stdout ?? 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr?.on('data', (c: Buffer) => {
    stderr = (stderr + c.toString()).slice(-STDERR_KEPT);
  });
  // Writing into a stage that already died is reported by its exit code, not by EPIPE.
  proc.stdin?.on('error', () => undefined);
  const done = new Promise<void>((resolve, reject) => {
    proc.once('error', (e) => reject(new HostCommandError(label, undefined, e.message, e)));
    proc.once('close', (code, signal) => {
      if (code === 0) resolve();
      else
        reject(new HostCommandError(label, code ?? undefined, stderr || `killed by ${signal ?? 'a signal'}`));
    });
  });
  // A caller that gives up early awaits `done` later; never an unhandled rejection meanwhile.
  done.catch(() => undefined);
  return {
    proc,
    done,
    kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    },
  };
}
