import { ArchwayError, toError } from '../core/light.ts';
import type { ApiClient } from './api-client.ts';
import type { JobEnd } from './exit-codes.ts';
import { createLogRenderer, type LogRenderer } from './log-render.ts';
import { out } from './output.ts';
import { placeText, type ShownJob, waitText } from './queue-place.ts';
import { parseSse } from './sse.ts';

/** Output could not be written: never a reason to resume the stream. */
class OutputFailed {
  constructor(readonly error: unknown) {}
}

/** How long a follow keeps trying to get its stream back after losing it (an API or Redis restart). */
const RESUME_FOR_MS = 60_000;
/** How long a follow waits for the job to start before it says what the job waits for. */
const FIRST_WAIT_LINE_MS = 1000;
/** How often a follow of a queued job asks what it waits for. */
const WAIT_POLL_MS = 2000;

/** What `GET /v1/pools/:arch` says that a waiting job's line shows. */
interface PoolWait {
  waiting: number;
  healthyNodes: number;
  totalSlots: number;
  estimatedWaitSeconds: number | null;
  estimate: { note: string };
}

/** The nodes a job of the arch waits for, in words. */
const nodesText = (arch: string, pool: PoolWait) =>
  pool.healthyNodes === 0
    ? `no live ${arch} node`
    : `${pool.healthyNodes} ${arch} node${pool.healthyNodes === 1 ? '' : 's'} (${pool.totalSlots} slots)`;

/**
 * The line a follow of a queued job prints: what it waits for (issue #13). In line, its place
 * and its own estimate (`3rd of 7 in the amd64 queue, 2 amd64 nodes (4 slots), estimated wait
 * 12s`); in back-off, until when; without a place from the API, the arch's waiting count.
 */
export function waitingLine(job: ShownJob, pool: PoolWait): string {
  const head = `archway: job ${job.id} is queued: `;
  const q = job.queue;
  const nodes = nodesText(job.arch, pool);
  if (q?.status === 'waiting')
    return `${head}${placeText(job)}, ${nodes}, ${waitText(q.estimatedWaitSeconds, q.estimate.note)}`;
  if (q?.status === 'delayed') return `${head}${placeText(job)}, then in line for ${nodes}`;
  return `${head}${pool.waiting} waiting for ${nodes}, ${waitText(pool.estimatedWaitSeconds, pool.estimate.note)}`;
}

/** The line of a queued job that needs no pool: held by a concurrency cap, or being started. */
function lineWithoutPool(job: ShownJob): string | undefined {
  const head = `archway: job ${job.id} is queued: `;
  // Held: free slots would not start it, its group's jobs will.
  if (job.queue?.status === 'held' || job.queue?.status === 'starting') return `${head}${placeText(job)}`;
  if (job.queue === undefined && job.waitReason) return `${head}held, ${job.waitReason}`;
  return undefined;
}

/**
 * What a terminal is sent to put `line` where `last` is: back to the start of `last`, which
 * wraps onto more than one row on a terminal narrower than it (`columns`; 80 when unknown), then
 * erased to the end of the screen. `\r\x1b[K` alone erases only the last of those rows.
 */
export function rewriteLine(last: string, line: string, columns: number | undefined): string {
  if (!last) return `\r\x1b[K${line}`;
  const rows = Math.max(1, Math.ceil(last.length / (columns && columns > 0 ? columns : 80)));
  return `\r${rows > 1 ? `\x1b[${rows - 1}A` : ''}\x1b[J${line}`;
}

/**
 * While the job is queued, prints what it waits for on stderr, again whenever that changes
 * (on a terminal the line is rewritten in place); stops at the first log chunk or state change.
 */
function reportWaiting(client: ApiClient, id: string): { stop(): void } {
  let stopped = false;
  let last = '';
  const tty = process.stderr.isTTY === true;
  let timer: NodeJS.Timeout | undefined;
  const tick = async () => {
    try {
      const job = await client.json<ShownJob>('GET', `/v1/jobs/${encodeURIComponent(id)}`);
      if (stopped || job.state !== 'queued') return stop();
      const line =
        lineWithoutPool(job) ?? waitingLine(job, await client.json<PoolWait>('GET', `/v1/pools/${job.arch}`));
      if (stopped) return;
      if (line !== last) {
        process.stderr.write(tty ? rewriteLine(last, line, process.stderr.columns) : `${line}\n`);
        last = line;
      }
    } catch {
      // What it waits for is a courtesy: the log stream reports real trouble.
    }
    if (!stopped) timer = setTimeout(tick, WAIT_POLL_MS);
  };
  const stop = () => {
    if (stopped) return;
    stopped = true;
    if (timer) clearTimeout(timer);
    if (tty && last) process.stderr.write('\n');
  };
  // A job that starts within a second needs no line about waiting.
  timer = setTimeout(tick, FIRST_WAIT_LINE_MS);
  return { stop };
}

/**
 * Streams a job's log to stdout until its end, over server-sent events; when the stream breaks
 * it resumes after the last chunk it printed (Last-Event-ID), so nothing is printed twice.
 * `render` shapes what reaches the terminal (default: markers dropped, colours kept).
 */
export async function followJob(
  client: ApiClient,
  id: string,
  render: LogRenderer = createLogRenderer({ color: true }),
): Promise<JobEnd> {
  let last: string | undefined;
  let lostSince: number | undefined;
  const waiting = reportWaiting(client, id);
  try {
    for (;;) {
      try {
        const res = await client.request('GET', `/v1/jobs/${encodeURIComponent(id)}/log`, {
          headers: { accept: 'text/event-stream', ...(last ? { 'last-event-id': last } : {}) },
        });
        if (!res.body) throw new Error('the API sent no body');
        for await (const ev of parseSse(res.body)) {
          lostSince = undefined;
          if (ev.event === 'log') {
            waiting.stop();
            await out(render.push(JSON.parse(ev.data) as string)).catch((e: unknown) => {
              throw new OutputFailed(e);
            });
            if (ev.id) last = ev.id;
          } else if (ev.event === 'end') {
            await out(render.end());
            return JSON.parse(ev.data) as JobEnd;
          }
        }
        throw new Error('the log stream ended early');
      } catch (e) {
        if (e instanceof OutputFailed) throw e.error;
        // The API's own answer (404, 401, ...) is final; a broken connection or a 5xx is retried.
        if (e instanceof ArchwayError && e.httpStatus < 500) throw e;
        const now = Date.now();
        if (lostSince === undefined) {
          lostSince = now;
          process.stderr.write(`archway: lost the log stream (${toError(e).message}); resuming...\n`);
        } else if (now - lostSince > RESUME_FOR_MS) {
          throw e;
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  } finally {
    waiting.stop();
  }
}
