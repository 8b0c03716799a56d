import { ArchwayError, type JobRecord, toError } from '../core/light.ts';
import type { ApiClient } from './api-client.ts';
import type { JobEnd } from './exit-codes.ts';
import { createLogRenderer, type LogRenderer } from './log-render.ts';
import { out } from './output.ts';
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

/** The line a follow of a queued job prints: what it waits for (issue #13). */
export function waitingLine(id: string, arch: string, pool: PoolWait): string {
  const nodes =
    pool.healthyNodes === 0
      ? `no live ${arch} node`
      : `${pool.healthyNodes} ${arch} node${pool.healthyNodes === 1 ? '' : 's'} (${pool.totalSlots} slots)`;
  const wait =
    pool.estimatedWaitSeconds === null
      ? `wait unknown (${pool.estimate.note})`
      : `estimated wait ${Math.round(pool.estimatedWaitSeconds)}s`;
  return `archway: job ${id} is queued: ${pool.waiting} waiting for ${nodes}, ${wait}`;
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
      const job = await client.json<JobRecord>('GET', `/v1/jobs/${encodeURIComponent(id)}`);
      if (stopped || job.state !== 'queued') return stop();
      // Held by a concurrency cap: free slots would not start it, its group's jobs will.
      const line = job.waitReason
        ? `archway: job ${id} is queued: held, ${job.waitReason}`
        : waitingLine(id, job.arch, await client.json<PoolWait>('GET', `/v1/pools/${job.arch}`));
      if (stopped) return;
      if (line !== last) {
        process.stderr.write(tty ? `\r\x1b[K${line}` : `${line}\n`);
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
