import { constants } from 'node:fs';
import { chown, lstat, mkdir, open, stat } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { ArchwayError, InvalidInputError, type JobSpec, shellQuote } from '../src/core/index.ts';

/**
 * Where a job's script is placed in its container. It runs from a file, not from argv: one
 * argument may not exceed 128 KiB (MAX_ARG_STRLEN), and a script may be up to 1 MiB.
 */
export const SCRIPT_IN_CONTAINER = '/.archway/script.sh';

/** The argv of every job: the shell reads the script from its file. */
export const SCRIPT_ARGV: readonly string[] = ['/bin/sh', SCRIPT_IN_CONTAINER];

/**
 * The text of a job's script, as the shell reads it. A string is the script itself. A list runs
 * its commands in order in one shell (so a `cd` or `export` holds for the next), each echoed
 * before it runs, and stops at the first that fails, with its exit code.
 */
export function scriptText(script: JobSpec['script']): string {
  if (typeof script === 'string') return script;
  const lines = [
    'archway_step() { printf "\\033[33;1m$ %s\\033[0m\\n" "$1"; eval "$1"; }',
    ...script.map((cmd) => `archway_step ${shellQuote(cmd)} || exit $?`),
  ];
  return `${lines.join('\n')}\n`;
}

/**
 * Writes the script to SCRIPT_IN_CONTAINER in a container's root filesystem (its host path),
 * owned by container root (the owner of the rootfs itself, whatever range it maps to). Never
 * through a symlink: the file is created anew, and its directory must be a real one.
 */
export async function writeScript(rootfs: string, script: JobSpec['script']): Promise<void> {
  const dir = join(rootfs, '.archway');
  const root = await stat(rootfs);
  const st = await lstat(dir).catch(() => undefined);
  if (!st) {
    await mkdir(dir, { mode: 0o755 });
    await chown(dir, root.uid, root.gid);
  } else if (!st.isDirectory()) {
    throw new ArchwayError(
      'IMAGE_UNUSABLE',
      `the image's /.archway is not a directory: the script cannot be placed`,
    );
  }
  const fh = await open(
    join(dir, 'script.sh'),
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o644,
  );
  const text = scriptText(script);
  try {
    await fh.writeFile(text);
    await fh.chown(root.uid, root.gid);
  } catch (e) {
    // EDQUOT is the container's own qgroup, set from the job's diskMiB: the job's mistake, which
    // must not count against the node (ENOSPC, the pool itself full, stays the host's).
    if ((e as NodeJS.ErrnoException).errno === -osConstants.errno.EDQUOT)
      throw new InvalidInputError(
        'resources.diskMiB',
        `the job's disk limit cannot hold its own script (${Buffer.byteLength(text)} bytes): ask for more`,
      );
    throw e;
  } finally {
    await fh.close();
  }
}

/** The environment a job sees: what CI scripts look for, then the job's env and secrets. */
export function jobEnv(
  spec: JobSpec,
  o: { jobId: string; attempt: number; node: string },
): Record<string, string> {
  return {
    CI: 'true',
    ARCHWAY: 'true',
    ARCHWAY_JOB_ID: o.jobId,
    ARCHWAY_ATTEMPT: String(o.attempt),
    ARCHWAY_ARCH: spec.arch,
    ARCHWAY_NODE: o.node,
    ARCHWAY_NETWORK: spec.network,
    HOME: '/root',
    LANG: 'C.UTF-8',
    ...spec.env,
    ...spec.secrets,
  };
}
