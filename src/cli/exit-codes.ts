import type { JobRecord } from '../core/light.ts';

/**
 * The exit codes of every client command (docs/operations.md has the table). A command that
 * follows a job (`submit --follow`, `logs --follow`) exits with the job's own code when the job
 * ran to its end, else with one naming why it did not, as coreutils' `timeout` and docker do.
 */
export const CLI_EXIT = {
  /** The command did what it was asked; a followed job passed. */
  ok: 0,
  /** The command failed (the API unreachable or answering 5xx); a followed job failed without an exit code. */
  failed: 1,
  /** Bad usage or input: an unknown option, an invalid value, or the API's 4xx (not found, unauthorized, ...). */
  usage: 2,
  /** The followed job hit its time limit or its silence limit (as `timeout`). */
  timeout: 124,
  /** The followed job could not be run: the host failed it on every attempt (as docker's 125). */
  errored: 125,
  /** The followed job was canceled (128 + SIGINT). */
  canceled: 130,
  /** The followed job ran out of memory (128 + SIGKILL, what a shell shows for an OOM kill). */
  oom: 137,
} as const;

/** How a job ended, as the log's `end` event says. */
export interface JobEnd {
  state: JobRecord['state'] | null;
  exitCode: number | null;
  reason: JobRecord['reason'] | null;
}

/** The exit code of a follow: the job's own when it ran to its end, else one naming why it did not. */
export function exitCodeOf(end: JobEnd): number {
  switch (end.reason) {
    case 'timeout':
    case 'silence':
      return CLI_EXIT.timeout;
    case 'oom':
      return CLI_EXIT.oom;
    case 'canceled':
    case 'superseded':
      return CLI_EXIT.canceled;
    default:
      break;
  }
  switch (end.state) {
    case 'passed':
      return CLI_EXIT.ok;
    case 'failed':
      return end.exitCode ? end.exitCode : CLI_EXIT.failed;
    case 'canceled':
      return CLI_EXIT.canceled;
    case 'errored':
    case 'queued':
    case 'running':
    case null:
      return CLI_EXIT.errored;
    default: {
      const never: never = end.state;
      throw new Error(`unhandled state ${never}`);
    }
  }
}

const WHY: Partial<Record<NonNullable<JobEnd['reason']>, string>> = {
  timeout: 'it ran past its time limit',
  silence: 'it printed nothing for longer than its silence limit',
  log_limit: 'its log reached the size limit',
  oom: 'it ran out of memory',
  canceled: 'it was canceled',
  superseded: 'a newer build replaced it',
  infra: 'the host failed it',
};

/**
 * The last line of a follow, which says the code the command exits with and why; the job's own
 * code is named only when it is the one returned (a timeout's 137 from SIGKILL is not, issue #10).
 */
export function describeEnd(id: string, end: JobEnd): string {
  const code = exitCodeOf(end);
  const why = end.reason ? (WHY[end.reason] ?? end.reason) : undefined;
  const own =
    end.state === 'failed' && end.exitCode && end.exitCode === code ? ` with exit code ${code}` : '';
  const state = end.state ?? 'ended';
  if (why) {
    const reason = end.reason === end.state ? '' : ` (${end.reason})`;
    return `archway: job ${id} ${state}: ${why}${reason}; exit ${code}\n`;
  }
  return `archway: job ${id} ${state}${own}${own ? '' : `; exit ${code}`}\n`;
}
