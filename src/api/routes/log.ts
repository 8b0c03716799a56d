import { once } from 'node:events';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { JobNotFoundError, type JobQueue, type LogData, readLog } from '../../../queue/index.ts';
import { FINAL_STATES, type JobRecord } from '../../core/index.ts';
import type { ApiDeps } from '../api-deps.ts';
import type { LogFanout } from '../log-fanout.ts';
import { errorResponses, Flag, JobParams, StreamId } from '../schemas.ts';

/** An SSE comment this often keeps a quiet stream alive through proxies that drop idle connections. */
const KEEPALIVE_MS = 15_000;

/** How long the end of a log waits for the job's final state (its worker may write them in either order). */
const SETTLE_MS = 2000;

export interface LogRoutesOptions {
  deps: ApiDeps;
  /** One controller per open follow; aborted when the API closes, so shutdown never waits on a log. */
  follows: Set<AbortController>;
  /** The followers of each job share one Redis reader; it caps them (429). */
  fanout: LogFanout;
}

/** One SSE event. The chunk is sent as a JSON string: a log may hold \r, which would end an SSE line. */
export function sseEvent(event: string, data: unknown, id?: string): string {
  return `${id === undefined ? '' : `id: ${id}\n`}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** The `log` event of each chunk, made once for all the followers of its job (the fan-out shares the chunks). */
const logEvents = new WeakMap<LogData, string>();
function logEvent(c: LogData): string {
  let e = logEvents.get(c);
  if (e === undefined) {
    e = sseEvent('log', c.data.toString(), c.id);
    logEvents.set(c, e);
  }
  return e;
}

/** A follower whose client left written log unread for longer than the fan-out allows. */
class FollowerStalledError extends Error {}

/** `GET /v1/jobs/:id/log`: the log so far, followed as plain text, or as server-sent events. */
export const logRoutes: FastifyPluginAsyncZod<LogRoutesOptions> = async (app, { deps, follows, fanout }) => {
  const { queue, redis, keys } = deps;

  app.get(
    '/jobs/:id/log',
    {
      // A HEAD of a follow would hold a connection until the job ends, for nothing.
      exposeHeadRoute: false,
      schema: {
        summary: "A job's log",
        description: [
          'The whole log so far as text/plain. With `follow=1`, the log streams (chunked text/plain) until the job ends.',
          'With `Accept: text/event-stream`, server-sent events: one `log` event per chunk (`id` the chunk id, `data` the chunk text as a JSON string),',
          'then one `end` event with `{ state, exitCode, reason }`. `Last-Event-ID` (or `after`) resumes after that chunk.',
        ].join(' '),
        tags: ['jobs'],
        security: [{ bearer: [] }],
        params: JobParams,
        querystring: z.object({
          follow: Flag.optional(),
          /** Only the chunks after this chunk id. */
          after: StreamId.optional(),
        }),
        headers: z.object({ 'last-event-id': StreamId.optional() }).loose(),
        response: {
          200: {
            description: 'The log (text/plain), or its events (text/event-stream)',
            content: { 'text/plain': { schema: z.string() }, 'text/event-stream': { schema: z.string() } },
          },
          ...errorResponses(400, 401, 403, 404, 429),
        },
      },
    },
    async (req, reply) => {
      const { id } = req.params;
      const job = await queue.get(id);
      if (!job) throw new JobNotFoundError(id);
      const sse = (req.headers.accept ?? '').includes('text/event-stream');
      const after = req.headers['last-event-id'] ?? req.query.after;

      if (!sse && !req.query.follow) {
        const { chunks } = await readLog(redis, keys, id, after);
        return reply
          .type('text/plain; charset=utf-8')
          .header('archway-job-state', job.state)
          .send(chunks.map((c) => c.text).join(''));
      }

      return followLog({ req, reply, id, sse, after, queue, follows, fanout });
    },
  );
};

export interface FollowLogOptions {
  req: FastifyRequest;
  reply: FastifyReply;
  /** The job, known to exist. */
  id: string;
  /** Server-sent events (else chunked text/plain). */
  sse: boolean;
  /** Only the chunks after this log entry id. */
  after: string | undefined;
  queue: JobQueue;
  follows: Set<AbortController>;
  fanout: LogFanout;
}

/**
 * Streams a job's log as it is written, until its end (then, for SSE, one `end` event with the
 * job's state): the follow of `GET /v1/jobs/:id/log` and of the job's page.
 */
export async function followLog(o: FollowLogOptions): Promise<FastifyReply> {
  const { req, reply, id, sse, after, queue, follows, fanout } = o;
  const settled = async (jobId: string): Promise<JobRecord | undefined> => {
    const deadline = Date.now() + SETTLE_MS;
    for (;;) {
      const job = await queue.get(jobId);
      if (!job || FINAL_STATES.includes(job.state) || Date.now() >= deadline) return job;
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  // Over a cap: 429 (with a Retry-After) before anything is streamed.
  reply.header('retry-after', '10');
  const follower = fanout.join(id);
  reply.removeHeader('retry-after');
  // A stream of our own: fastify's stream handling would hold the headers until the first chunk.
  reply.hijack();
  const res = reply.raw;
  const stop = new AbortController();
  follows.add(stop);
  const onClose = () => stop.abort();
  res.once('close', onClose);
  let keepalive: NodeJS.Timeout | undefined;
  /** Waits for the client to read what was written; past the fan-out's stall time, it is cut off. */
  const drained = async () => {
    const stalled = AbortSignal.timeout(fanout.stallMs);
    try {
      await once(res, 'drain', { signal: AbortSignal.any([stop.signal, stalled]) });
    } catch (e) {
      if (stalled.aborted && !stop.signal.aborted)
        throw new FollowerStalledError(`the client read nothing for ${fanout.stallMs} ms`);
      throw e;
    }
  };
  const write = async (s: string) => {
    if (!res.write(s)) await drained();
  };
  /** One page in one go: one SSE string, or the chunks' bytes in one writev (corked), as Redis gave them. */
  const writePage = async (page: LogData[]) => {
    let ok = true;
    if (sse) ok = res.write(page.length === 1 ? logEvent(page[0] as LogData) : page.map(logEvent).join(''));
    else {
      res.cork();
      for (const c of page) ok = res.write(c.data);
      res.uncork();
    }
    if (!ok) await drained();
  };
  try {
    res.writeHead(200, {
      'content-type': sse ? 'text/event-stream; charset=utf-8' : 'text/plain; charset=utf-8',
      'cache-control': 'no-cache',
      'x-accel-buffering': 'no',
    });
    res.flushHeaders();
    // Each event is one write, so a comment written from the timer never lands inside one.
    if (sse) keepalive = setInterval(() => res.write(': keep-alive\n\n'), KEEPALIVE_MS);
    for await (const page of follower.pages(after, stop.signal)) await writePage(page);
    if (sse && !stop.signal.aborted) {
      const end = await settled(id);
      await write(
        sseEvent('end', {
          state: end?.state ?? null,
          exitCode: end?.exitCode ?? null,
          reason: end?.reason ?? null,
        }),
      );
    }
    // Ended by the API closing: cut the response short, so the client knows to resume elsewhere.
    if (stop.signal.aborted) res.destroy();
    else res.end();
  } catch (e) {
    // A client that went away (or a closing API) is the normal end of a follow, not an error;
    // one that stopped reading is cut off, so its place (and what it holds) is freed.
    if (e instanceof FollowerStalledError) req.log.info({ job: id }, `log follower cut off: ${e.message}`);
    else if (!stop.signal.aborted) req.log.warn({ err: e, job: id }, 'log follow failed');
    res.destroy();
  } finally {
    clearInterval(keepalive);
    follows.delete(stop);
    res.off('close', onClose);
    follower.leave();
  }
  return reply;
}
