import { execa } from 'execa';
import { AbortedError } from '../errors/aborted-error.ts';
import { HostCommandError } from '../errors/host-command-error.ts';

/** The only environment host commands get: never the parent's (secrets must not leak into them). */
export const HOST_ENV: Readonly<Record<string, string>> = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  LANG: 'C.UTF-8',
};

export interface RunCommandOptions {
  /** Aborts the command (SIGTERM, then SIGKILL after 2 s). */
  signal?: AbortSignal | undefined;
  /** Milliseconds before the command is killed. Default: none. */
  timeoutMs?: number | undefined;
  /** Bytes or text written to stdin. */
  input?: string | Uint8Array | undefined;
  cwd?: string | undefined;
  /** How errors name the command. Default: the file and its first two arguments. */
  label?: string | undefined;
  /**
   * Discard stdout and stderr instead of reading them. Needed when the command leaves a child
   * holding them (`runc run --detach` hands its stdio to the container's init).
   */
  detachedOutput?: boolean | undefined;
  /** Extra variables on top of HOST_ENV. */
  env?: Record<string, string> | undefined;
}

/** Runs a host command and returns its stdout; a non-zero exit throws HostCommandError with its stderr. */
export async function runCommand(
  file: string,
  args: readonly string[],
  opts: RunCommandOptions = {},
): Promise<string> {
  const result = await execa(file, args, {
    env: { ...HOST_ENV, ...opts.env },
    extendEnv: false,
    reject: false,
    stripFinalNewline: true,
    ...(opts.detachedOutput ? { stdout: 'ignore' as const, stderr: 'ignore' as const } : {}),
    ...(opts.input === undefined ? { stdin: 'ignore' as const } : { input: opts.input }),
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
    ...(opts.signal ? { cancelSignal: opts.signal } : {}),
    ...(opts.timeoutMs ? { timeout: opts.timeoutMs } : {}),
    forceKillAfterDelay: 2000,
  });
  if (result.isCanceled)
    throw new AbortedError(opts.label ?? `${file} ${args[0] ?? ''}`.trim(), opts.signal?.reason);
  if (result.failed) {
    const stderr = typeof result.stderr === 'string' ? result.stderr : '';
    const why = result.timedOut
      ? `timed out after ${opts.timeoutMs} ms`
      : stderr || (result.shortMessage ?? 'failed');
    throw new HostCommandError(
      opts.label ?? `${file} ${args.slice(0, 2).join(' ')}`.trim(),
      result.exitCode,
      why,
    );
  }
  return typeof result.stdout === 'string' ? result.stdout : '';
}

/** True when `file` is found on HOST_ENV's PATH (or is an absolute path that exists). */
export async function hasCommand(file: string): Promise<boolean> {
  try {
    await runCommand('sh', ['-c', 'command -v "$1"', 'sh', file]);
    return true;
  } catch {
    return false;
  }
}
