import type { Redis } from 'ioredis';
import {
  createJobEventFollower,
  type JobEvent,
  type JobQueue,
  maskSecrets,
  stripAnsi,
} from '../../queue/index.ts';
import { FINAL_STATES, type JobRecord, type Keys, type Logger } from '../../src/core/index.ts';
import { JOB_EXIT } from '../repo-config/index.ts';
import type { BuildRecord, Builds } from './builds.ts';
import { type CheckConclusion, type CheckRuns, OUTPUT_LIMIT } from './check-runs.ts';

export interface ReporterOptions {
  redis: Redis;
  /** Makes the connection the reporter blocks on in XREAD. */
  duplicate: () => Redis;
  keys: Keys;
  queue: JobQueue;
  builds: Builds;
  checks: CheckRuns;
  logger: Logger;
  /** Longest log tail put in a check run's `output.text`, in characters. Default 60000. */
  logTailChars?: number;
}

export interface Reporter {
  /** Sets its position (the end of the events stream the first time) and starts following. */
  start(): Promise<void>;
  /** Idempotent: ends the loop (within a second), then its connection. */
  close(): Promise<void>;
}

/** What a finished job's check run says: its conclusion, and a sentence when the job did not simply pass or fail. */
export function conclusionOf(
  job: Pick<JobRecord, 'state' | 'reason' | 'exitCode' | 'spec'>,
  allowFailure: boolean,
): { conclusion: CheckConclusion; title: string; note: string } {
  let r: { conclusion: CheckConclusion; title: string; note: string };
  switch (job.state) {
    case 'passed':
      r = { conclusion: 'success', title: 'Passed', note: 'The job passed.' };
      break;
    case 'failed':
      if (job.reason === 'timeout') {
        r = {
          conclusion: 'timed_out',
          title: 'Timed out',
          note: `Stopped: the job ran longer than its time limit of ${job.spec.timeoutSeconds} s.`,
        };
      } else if (job.reason === 'silence') {
        r = {
          conclusion: 'failure',
          title: 'Failed: no output',
          note: `Stopped: the job printed nothing for ${job.spec.silenceTimeoutSeconds} s.`,
        };
      } else if (job.reason === 'log_limit') {
        r = {
          conclusion: 'failure',
          title: 'Failed: log too long',
          note: 'Stopped: the log reached its size limit.',
        };
      } else if (job.reason === 'oom') {
        r = {
          conclusion: 'failure',
          title: 'Failed: out of memory',
          note: 'Killed: the job ran out of memory.',
        };
      } else if (job.exitCode === JOB_EXIT.errored) {
        // Travis calls this errored; archway's job failed (the user's commands did): never retried.
        r = {
          conclusion: 'failure',
          title: 'Errored: an install phase failed',
          note: 'A step of `addons.apt`, `before_install`, `install` or `before_script` failed, or the compiler is not in the image (exit code 2; Travis calls this errored), so `script` did not run.',
        };
      } else {
        r = {
          conclusion: 'failure',
          title: 'Failed',
          note: `The job failed (exit code ${job.exitCode ?? '?'}).`,
        };
      }
      break;
    case 'errored':
      r = {
        conclusion: 'failure',
        title: 'Errored: host failure',
        note: 'archway could not run the job: its host failed on every attempt (not a failure of the build itself). Re-run it.',
      };
      break;
    case 'canceled':
      r =
        job.reason === 'superseded'
          ? {
              conclusion: 'cancelled',
              title: 'Superseded',
              note: 'Canceled: a newer push superseded this build.',
            }
          : { conclusion: 'cancelled', title: 'Canceled', note: 'The job was canceled.' };
      break;
    default:
      r = { conclusion: 'neutral', title: job.state, note: '' };
  }
  if (allowFailure && (r.conclusion === 'failure' || r.conclusion === 'timed_out')) {
    return {
      conclusion: 'neutral',
      title: `${r.title} (allowed to fail)`,
      note: `${r.note} The job is allowed to fail.`,
    };
  }
  return r;
}

/**
 * The last `max` characters of a job's log, without terminal colour codes, and with `secrets`
 * masked after the codes are removed (the log writer masks that view too; this holds for logs
 * written before it did).
 */
export async function logTail(
  redis: Redis,
  keys: Keys,
  jobId: string,
  max: number,
  secrets: readonly string[] = [],
): Promise<string> {
  const parts: string[] = [];
  let size = 0;
  let end = '+';
  while (size < max) {
    const entries = (await redis.xrevrange(keys.log(jobId), end, '-', 'COUNT', 50)) as [string, string[]][];
    for (const [, f] of entries) {
      if (f[0] === 't') {
        parts.push(f[1] ?? '');
        size += (f[1] ?? '').length;
      }
    }
    const last = entries.at(-1)?.[0];
    if (!last || entries.length < 50) break;
    end = `(${last}`;
  }
  const text = maskSecrets(stripAnsi(parts.reverse().join('')), secrets);
  return text.length > max
    ? `[... the first ${text.length - max} characters are in the full log ...]\n${text.slice(-max)}`
    : text;
}

/** A Markdown code block around text that may itself hold backticks. */
function fenced(text: string): string {
  const longest = Math.max(2, ...[...text.matchAll(/`+/g)].map((m) => m[0].length));
  const fence = '`'.repeat(longest + 1);
  return `${fence}\n${text}\n${fence}`;
}

/**
 * Follows the job store's events stream (on a connection of its own, from the position it saved)
 * and turns the state changes of webhook jobs into check run updates, and finished jobs into stage
 * advances. It calls no GitHub API itself: updates go through the check run queue. One API process
 * reports at a time (a lease in Redis); the others stand by.
 */
export function createReporter(o: ReporterOptions): Reporter {
  const log = o.logger.child({ component: 'github-reporter' });
  const tailChars = Math.min(o.logTailChars ?? 60_000, OUTPUT_LIMIT - 200);

  async function handle(e: JobEvent): Promise<void> {
    const jobId = e.job;
    const job = await o.queue.get(jobId);
    const buildId = job?.labels.build;
    if (!job || !buildId) return;
    const build = await o.builds.get(buildId);
    // Builds made through the API have no check runs: the API's build follower advances them.
    const slot = build?.origin === 'github' ? o.builds.slotOf(build, jobId) : undefined;
    if (!build || !slot) return;
    const at = new Date(e.at).toISOString();
    const target = o.builds.target(build, slot);
    if (e.to === 'running' && e.from === 'queued') {
      await o.checks.update(target, {
        status: 'in_progress',
        startedAt: at,
        title: 'Running',
        summary: o.builds.summary(
          build,
          slot,
          `Running on node \`${job.node ?? '?'}\`${e.attempt > 1 ? ` (attempt ${e.attempt})` : ''}.`,
        ),
      });
      return;
    }
    if (e.to === 'queued' && e.from === 'running') {
      await o.checks.update(target, {
        status: 'queued',
        title: 'Queued again',
        summary: o.builds.summary(
          build,
          slot,
          `Attempt ${e.attempt} errored on its host; the job is queued for another node.`,
        ),
      });
      return;
    }
    if (FINAL_STATES.includes(e.to)) {
      await report(build, slot, jobId, at);
      await o.builds.jobFinished(jobId, buildId, e.to);
    }
  }

  async function report(
    build: BuildRecord,
    slot: NonNullable<ReturnType<Builds['slotOf']>>,
    jobId: string,
    at: string,
  ): Promise<void> {
    const job = await o.queue.get(jobId);
    if (!job) return;
    const c = conclusionOf(job, slot.allowFailure);
    const tail = await logTail(o.redis, o.keys, jobId, tailChars, Object.values(job.spec.secrets));
    await o.checks.update(o.builds.target(build, slot), {
      status: 'completed',
      conclusion: c.conclusion,
      completedAt: job.finishedAt ?? at,
      title: c.title,
      summary: o.builds.summary(build, slot, c.note),
      ...(tail ? { text: `The end of the log:\n\n${fenced(tail)}` } : {}),
      actions: [],
    });
  }

  // Its first start reports what happens from now on, not the stream's whole past.
  return createJobEventFollower(
    {
      redis: o.redis,
      duplicate: o.duplicate,
      keys: o.keys,
      leaseKey: o.keys.githubReporterLease,
      positionKey: o.keys.githubReporterPosition,
      logger: log,
      what: 'reporting',
    },
    handle,
  );
}
