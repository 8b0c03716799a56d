import { spawn } from 'node:child_process';
import { HOST_ENV } from '../src/core/index.ts';

/**
 * The watcher's script (POSIX sh). It sleeps in steps of at most `step` seconds while the
 * container's init (pid $1, with start time $2 in /proc/PID/stat, so a reused pid is told apart)
 * lives, and SIGKILLs it once $3 seconds have passed: the kernel then kills every process of the
 * container's pid namespace. It exits as soon as the init is gone. Only builtins and `sleep`:
 * about 1 MiB of memory, one fork per step.
 */
const WATCH_SCRIPT = `
pid=$1 start=$2 left=$3 step=$4
alive() {
  read -r stat < /proc/$pid/stat 2>/dev/null || return 1
  stat=\${stat##*) }
  set -- $stat
  [ "\${20}" = "$start" ]
}
while alive; do
  if [ "$left" -le 0 ]; then kill -KILL "$pid"; exit 0; fi
  n=$step; [ "$left" -lt "$n" ] && n=$left
  sleep "$n"
  left=$((left - n))
done
`;

/** Longest a watcher sleeps between two looks at its container. */
export const ORPHAN_WATCH_STEP_S = 5;

export interface OrphanWatchOptions {
  /** Host pid of the container's init (pid 1 of its pid namespace). */
  initPid: number;
  /** Its start time (/proc/PID/stat field 22). */
  initStart: string;
  /** Epoch ms at which the container is killed if it still runs. */
  killAt: number;
}

/**
 * Starts a watcher that outlives this process (its own session, no pipe to it): a container whose
 * worker died is still stopped at its job's deadline, though no worker runs on the host. The
 * worker's reap at its next start removes the rest (snapshot, bundle, runtime state).
 * Returns the watcher's pid.
 */
export function startOrphanWatch(o: OrphanWatchOptions): number | undefined {
  const left = Math.max(0, Math.ceil((o.killAt - Date.now()) / 1000));
  const child = spawn(
    '/bin/sh',
    [
      '-c',
      WATCH_SCRIPT,
      'archway-orphan-watch',
      String(o.initPid),
      o.initStart,
      String(left),
      String(ORPHAN_WATCH_STEP_S),
    ],
    { detached: true, stdio: 'ignore', env: HOST_ENV },
  );
  child.on('error', () => undefined);
  child.unref();
  return child.pid;
}
