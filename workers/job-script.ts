import type { JobSpec } from '../src/index.ts';

/** Quotes a string for a POSIX shell. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The argv of a job's script. A string runs as `/bin/sh -c SCRIPT`. A list runs its commands in
 * order in one shell (so a `cd` or `export` holds for the next), each echoed before it runs, and
 * stops at the first that fails, with its exit code.
 */
export function scriptArgv(script: JobSpec['script']): string[] {
  if (typeof script === 'string') return ['/bin/sh', '-c', script];
  const lines = [
    'archway_step() { printf "\\033[33;1m$ %s\\033[0m\\n" "$1"; eval "$1"; }',
    ...script.map((cmd) => `archway_step ${shellQuote(cmd)} || exit $?`),
  ];
  return ['/bin/sh', '-c', lines.join('\n')];
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
