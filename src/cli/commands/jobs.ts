import type { Command } from 'commander';
import type { JobRecord } from '../../core/light.ts';
import { type ApiClient, apiClientFrom, CLIENT_ENV_HELP } from '../api-client.ts';
import { out, outJson } from '../output.ts';
import { positiveNumber } from '../parse.ts';
import { placeText, type ShownJob, waitText } from '../queue-place.ts';
import { table } from '../table.ts';
import { duration } from './pools.ts';

const when = (iso: string | undefined) => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-');

/** Seconds between two ISO times, as people read them; '-' when one is missing. */
function took(from: string | undefined, to: string | undefined): string {
  if (!from || !to) return '-';
  const ms = Date.parse(to) - Date.parse(from);
  return Number.isFinite(ms) ? `${(ms / 1000).toFixed(1)}s` : '-';
}

/** The limits the job runs under: its node's (the spec's times its arch's multiplier) once an attempt started, else the spec's. */
function timeLimits(job: JobRecord): [string, string][] {
  const e = job.effectiveLimits;
  const spec = job.spec;
  const one = (effective: number, asked: number) =>
    e && e.multiplier !== 1
      ? `${duration(effective)} (${duration(asked)} x${e.multiplier} on ${job.arch})`
      : duration(asked);
  return [
    ['time limit', one(e?.timeoutSeconds ?? spec.timeoutSeconds, spec.timeoutSeconds)],
    [
      'silence limit',
      one(e?.silenceTimeoutSeconds ?? spec.silenceTimeoutSeconds, spec.silenceTimeoutSeconds),
    ],
  ];
}

/** `archway job show ID` for people: state, reason, where it ran, every attempt, its times, its log. */
export function describeJob(job: ShownJob, api: ApiClient): string {
  const lines: [string, string][] = [
    ['id', job.id],
    ['state', job.state],
    ['reason', job.reason ?? '-'],
    ['exit code', job.exitCode === undefined ? '-' : String(job.exitCode)],
    ['arch', job.arch],
    ['image', job.imageDigest ? `${job.image} (${job.imageDigest})` : job.image],
    ['node', job.node ?? '-'],
    ['created', when(job.createdAt)],
    ['started', when(job.startedAt)],
    ['finished', when(job.finishedAt)],
    // Still queued or running: so far.
    [
      'queued for',
      took(job.createdAt, job.startedAt ?? (job.state === 'queued' ? new Date().toISOString() : undefined)),
    ],
    [
      'ran for',
      took(job.startedAt, job.finishedAt ?? (job.state === 'running' ? new Date().toISOString() : undefined)),
    ],
    ['log', `${api.url}/v1/jobs/${encodeURIComponent(job.id)}/log (${job.logBytes} bytes)`],
    ...timeLimits(job),
  ];
  // The job's page in a browser, a signed link (issue 12): the API sets it on GET /v1/jobs/:id.
  if (job.pageUrl) lines.push(['page', job.pageUrl]);
  // Its place in its arch's queue (issue #13); a held job's reason is its `waiting` line.
  const q = job.queue;
  if (q && q.status !== 'held')
    lines.push([
      'queue',
      q.status === 'waiting'
        ? `${placeText(job)}, ${waitText(q.estimatedWaitSeconds, q.estimate.note)}`
        : (placeText(job) ?? ''),
    ]);
  if (job.waitReason && (q === undefined || q.status === 'held')) lines.push(['waiting', job.waitReason]);
  if (job.cancelRequested && job.state === 'running') lines.push(['cancel', 'requested']);
  const labels = Object.entries(job.labels);
  if (labels.length) lines.push(['labels', labels.map(([k, v]) => `${k}=${v}`).join(', ')]);
  for (const w of job.warnings) lines.push(['warning', w]);
  const width = Math.max(...lines.map(([k]) => k.length));
  let text = lines.map(([k, v]) => `${`${k}:`.padEnd(width + 2)}${v}\n`).join('');
  text += `attempts: ${job.attempts.length}\n`;
  if (job.attempts.length) {
    text += table(
      ['  #', 'NODE', 'OUTCOME', 'REASON', 'EXIT', 'STARTED', 'TOOK', 'ERROR'],
      job.attempts.map((a) => [
        `  ${a.n}`,
        a.node,
        a.outcome ?? (a.endedAt ? '-' : 'running'),
        a.reason ?? '',
        a.exitCode === undefined ? '' : String(a.exitCode),
        when(a.startedAt),
        took(a.startedAt, a.endedAt),
        a.error ?? '',
      ]),
    );
  }
  return text;
}

/** `archway jobs` (a list, newest first) and `archway job show ID`. */
export function registerJobs(program: Command, env: Record<string, string | undefined>): void {
  program
    .command('jobs')
    .description('list jobs, newest first')
    .option('--state <state>', 'queued, running, passed, failed, errored or canceled')
    .option('--arch <arch>', 'only this arch (aliases accepted)')
    .option('--label <key=value>', 'only jobs with this label')
    .option('--limit <n>', 'at most this many jobs', '20')
    .option('--json', 'print {"jobs": [...]} as the API returns them (with "next" when there are more)')
    .addHelpText(
      'after',
      `${CLIENT_ENV_HELP}

Example:
  archway jobs --state failed --arch arm64 --limit 5`,
    )
    .action(
      async (opts: { state?: string; arch?: string; label?: string; limit: string; json?: boolean }) => {
        const limit = positiveNumber('--limit', opts.limit, true);
        const api = apiClientFrom(env);
        const jobs: JobRecord[] = [];
        let cursor: string | undefined;
        do {
          const q = new URLSearchParams({
            limit: String(Math.min(100, limit - jobs.length)),
            ...(opts.state ? { state: opts.state } : {}),
            ...(opts.arch ? { arch: opts.arch } : {}),
            ...(opts.label ? { label: opts.label } : {}),
            ...(cursor ? { cursor } : {}),
          });
          const page = await api.json<{ jobs: JobRecord[]; next?: string }>('GET', `/v1/jobs?${q}`);
          jobs.push(...page.jobs);
          cursor = page.next;
        } while (cursor && jobs.length < limit);
        if (opts.json) return outJson(cursor ? { jobs, next: cursor } : { jobs });
        await out(
          table(
            ['ID', 'ARCH', 'STATE', 'REASON', 'IMAGE', 'CREATED'],
            jobs.map((j) => [
              j.id,
              j.arch,
              j.state,
              j.reason ?? (j.state === 'failed' && j.exitCode !== undefined ? `exit ${j.exitCode}` : ''),
              j.image,
              when(j.createdAt),
            ]),
          ),
        );
        if (cursor) process.stderr.write(`archway: more jobs than --limit ${limit}\n`);
      },
    );

  program
    .command('job')
    .description('one job: `job show ID`')
    .command('show')
    .description(
      'show a job: state, reason, arch, image and digest, node, attempts, times, log URL; a queued job its place in the queue',
    )
    .argument('<id>', 'job id')
    .option('--json', 'print the job record as the API returns it')
    .addHelpText(
      'after',
      `${CLIENT_ENV_HELP}

Example:
  archway job show 01J8Z3K5V2 --json`,
    )
    .action(async (id: string, opts: { json?: boolean }) => {
      const api = apiClientFrom(env);
      const job = await api.json<ShownJob>('GET', `/v1/jobs/${encodeURIComponent(id)}`);
      await (opts.json ? outJson(job) : out(describeJob(job, api)));
    });
}
