import { once } from 'node:events';
import type { Command } from 'commander';
import { z } from 'zod';
import type { JobRecord } from '../../core/index.ts';
import { ArchwayError, InvalidInputError, parseConfig, toError } from '../../core/index.ts';
import { positiveNumber } from '../parse.ts';
import { table } from '../table.ts';

/** What the API clients (submit, logs, cancel, jobs) read from the environment. */
export const ClientConfig = z.object({
  /** Where the API is. */
  ARCHWAY_URL: z
    .string()
    .regex(/^https?:\/\/[^\s]+$/, 'an http:// or https:// URL')
    .default('http://127.0.0.1:8080'),
  /** The bearer token sent to the API. No default: a secret. */
  ARCHWAY_TOKEN: z.string().optional(),
});
export type ClientConfig = z.infer<typeof ClientConfig>;

/** Exit codes of `submit --follow` for a job that did not simply exit (as `archway run` and coreutils' timeout). */
export const JOB_EXIT = { errored: 1, timeout: 124, canceled: 130, oom: 137 } as const;

/** How a job ended, as the log's `end` event says. */
export interface JobEnd {
  state: JobRecord['state'] | null;
  exitCode: number | null;
  reason: JobRecord['reason'] | null;
}

/** The exit code of `submit --follow`: the job's own when it ran to its end, else one naming why it did not. */
export function exitCodeOf(end: JobEnd): number {
  switch (end.reason) {
    case 'timeout':
    case 'silence':
      return JOB_EXIT.timeout;
    case 'oom':
      return JOB_EXIT.oom;
    case 'canceled':
      return JOB_EXIT.canceled;
    default:
      break;
  }
  switch (end.state) {
    case 'passed':
      return 0;
    case 'failed':
      return end.exitCode ? end.exitCode : 1;
    case 'canceled':
      return JOB_EXIT.canceled;
    case 'errored':
    case 'queued':
    case 'running':
    case null:
      return JOB_EXIT.errored;
    default: {
      const never: never = end.state;
      throw new Error(`unhandled state ${never}`);
    }
  }
}

/** `K=V` values of a repeatable option, as a record; an error names the option. */
export function keyValues(option: string, values: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of values) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new InvalidInputError(option, `expected KEY=VALUE, got '${kv}'`);
    out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

export interface SseEvent {
  id?: string;
  event: string;
  data: string;
}

/** Server-sent events from a response body (the parts of the format archway's API uses: id, event, data). */
export async function* parseSse(body: AsyncIterable<Uint8Array>): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buffer = '';
  let ev: { id?: string; event?: string; data: string[] } = { data: [] };
  const lines = function* (final: boolean) {
    for (;;) {
      const m = /\r\n|\r|\n/.exec(buffer);
      // A lone \r at the very end may be the first half of \r\n.
      if (!m || (m[0] === '\r' && m.index === buffer.length - 1 && !final)) return;
      yield buffer.slice(0, m.index);
      buffer = buffer.slice(m.index + m[0].length);
    }
  };
  const take = function* (line: string): Generator<SseEvent> {
    if (line === '') {
      if (ev.data.length > 0 || ev.event) {
        yield {
          ...(ev.id === undefined ? {} : { id: ev.id }),
          event: ev.event ?? 'message',
          data: ev.data.join('\n'),
        };
      }
      ev = { data: [] };
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'id') ev.id = value;
    else if (field === 'event') ev.event = value;
    else if (field === 'data') ev.data.push(value);
  };
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    for (const line of lines(false)) yield* take(line);
  }
  buffer += decoder.decode();
  for (const line of lines(true)) yield* take(line);
}

/** A request to the API failed or it answered with an error. */
function apiError(status: number, body: string, hasToken: boolean): ArchwayError {
  let code = `HTTP_${status}`;
  let message = body.trim() || `the API answered ${status}`;
  try {
    const parsed = JSON.parse(body) as { error?: { code?: string; message?: string } };
    if (parsed.error?.message) {
      message = parsed.error.message;
      code = parsed.error.code ?? code;
    }
  } catch {
    // Not JSON (a proxy's page): its text is the message.
  }
  if (status === 401 && !hasToken) message += ' (set ARCHWAY_TOKEN; `archway up` prints one)';
  return new ArchwayError(code, message, { httpStatus: status });
}

export interface ApiClient {
  readonly url: string;
  /** Any answer but a 2xx is thrown as an ArchwayError carrying the API's code, message and status. */
  request(
    method: string,
    path: string,
    o?: { body?: unknown; headers?: Record<string, string>; timeoutMs?: number },
  ): Promise<Response>;
  json<T>(method: string, path: string, o?: { body?: unknown; headers?: Record<string, string> }): Promise<T>;
}

export function createApiClient(config: ClientConfig): ApiClient {
  const base = config.ARCHWAY_URL.replace(/\/+$/, '');
  const client: ApiClient = {
    url: base,
    async request(method, path, o = {}) {
      const headers: Record<string, string> = { ...o.headers };
      if (config.ARCHWAY_TOKEN) headers.authorization = `Bearer ${config.ARCHWAY_TOKEN}`;
      if (o.body !== undefined) headers['content-type'] = 'application/json';
      let res: Response;
      try {
        res = await fetch(`${base}${path}`, {
          method,
          headers,
          ...(o.body === undefined ? {} : { body: JSON.stringify(o.body) }),
          ...(o.timeoutMs ? { signal: AbortSignal.timeout(o.timeoutMs) } : {}),
        });
      } catch (e) {
        const err = toError(e);
        const cause = err.cause instanceof Error ? err.cause : undefined;
        const why = (cause && 'code' in cause && String(cause.code)) || cause?.message || err.message;
        throw new ArchwayError(
          'API_UNREACHABLE',
          `cannot reach the API at ${base}: ${why} (is \`archway api\` or \`archway up\` running? ARCHWAY_URL says where it is)`,
          { httpStatus: 503, cause: e },
        );
      }
      if (!res.ok) throw apiError(res.status, await res.text().catch(() => ''), !!config.ARCHWAY_TOKEN);
      return res;
    },
    async json<T>(method: string, path: string, o = {}) {
      const res = await client.request(method, path, { ...o, timeoutMs: 30_000 });
      return (await res.json()) as T;
    },
  };
  return client;
}

let epipeHandled = false;

/** Writes to stdout, waiting when its pipe is full (a 200 MB log must not pile up in memory). */
async function out(text: string): Promise<void> {
  if (!epipeHandled) {
    epipeHandled = true;
    // `archway logs J | head`: the reader has gone, which is not an error worth a stack trace.
    process.stdout.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw e;
    });
  }
  if (!process.stdout.write(text)) await once(process.stdout, 'drain');
}

/** Output could not be written: never a reason to resume the stream. */
class OutputFailed {
  constructor(readonly error: unknown) {}
}

/** How long a follow keeps trying to get its stream back after losing it (an API or Redis restart). */
const RESUME_FOR_MS = 60_000;

/**
 * Streams a job's log to stdout until its end, over server-sent events; when the stream breaks
 * it resumes after the last chunk it printed (Last-Event-ID), so nothing is printed twice.
 */
export async function followJob(client: ApiClient, id: string): Promise<JobEnd> {
  let last: string | undefined;
  let lostSince: number | undefined;
  for (;;) {
    try {
      const res = await client.request('GET', `/v1/jobs/${encodeURIComponent(id)}/log`, {
        headers: { accept: 'text/event-stream', ...(last ? { 'last-event-id': last } : {}) },
      });
      if (!res.body) throw new Error('the API sent no body');
      for await (const ev of parseSse(res.body)) {
        lostSince = undefined;
        if (ev.event === 'log') {
          await out(JSON.parse(ev.data) as string).catch((e: unknown) => {
            throw new OutputFailed(e);
          });
          if (ev.id) last = ev.id;
        } else if (ev.event === 'end') {
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
}

function describeEnd(id: string, end: JobEnd): string {
  const exit = end.state === 'failed' && end.exitCode !== null ? ` with exit code ${end.exitCode}` : '';
  const reason = end.reason && end.reason !== end.state ? ` (${end.reason})` : '';
  return `archway: job ${id} ${end.state ?? 'ended'}${exit}${reason}\n`;
}

const collect = (value: string, previous: string[]) => [...previous, value];

/** `submit`, `logs`, `cancel` and `jobs`: clients of the HTTP API (ARCHWAY_URL, ARCHWAY_TOKEN). */
export function registerClient(program: Command, env: Record<string, string | undefined>): void {
  const client = () => createApiClient(parseConfig(ClientConfig, env));

  program
    .command('submit')
    .description('submit a job to the API; prints its id (with --follow: its log, then exits with its code)')
    .requiredOption(
      '--arch <arch>',
      'amd64, arm64, ppc64le or s390x (aliases: x86_64, aarch64, ppc64el, ...)',
    )
    .requiredOption('--image <name>', 'image name, or name@sha256:<digest>')
    .option('--follow', "stream the job's log, then exit with the job's exit code")
    .option('--env <KEY=VALUE>', 'environment variable for the script (repeatable)', collect, [])
    .option('--secret <KEY=VALUE>', 'like --env, but masked as [secure] in the log (repeatable)', collect, [])
    .option('--timeout <seconds>', 'wall-clock limit (default 3000)')
    .option(
      '--network <mode>',
      'none (default: only loopback) or egress (outbound only, with DNS and the package cache)',
    )
    .option('--label <key=value>', 'label for listing (repeatable)', collect, [])
    .option('--idempotency-key <key>', 'a retry with the same key returns the first job instead of a new one')
    .argument('<script...>', 'the script (after --); its words are joined with spaces')
    .action(
      async (
        words: string[],
        opts: {
          arch: string;
          image: string;
          follow?: boolean;
          env: string[];
          secret: string[];
          timeout?: string;
          network?: string;
          label: string[];
          idempotencyKey?: string;
        },
      ) => {
        if (opts.network !== undefined && opts.network !== 'none' && opts.network !== 'egress')
          throw new InvalidInputError('--network', `expected none or egress, got '${opts.network}'`);
        const body = {
          arch: opts.arch,
          image: opts.image,
          script: words.join(' '),
          ...(opts.env.length ? { env: keyValues('--env', opts.env) } : {}),
          ...(opts.secret.length ? { secrets: keyValues('--secret', opts.secret) } : {}),
          ...(opts.label.length ? { labels: keyValues('--label', opts.label) } : {}),
          ...(opts.network ? { network: opts.network } : {}),
          ...(opts.timeout === undefined
            ? {}
            : { timeoutSeconds: positiveNumber('--timeout', opts.timeout, true) }),
        };
        const api = client();
        const { job, warnings } = await api.json<{ job: JobRecord; warnings: string[] }>('POST', '/v1/jobs', {
          body,
          ...(opts.idempotencyKey ? { headers: { 'idempotency-key': opts.idempotencyKey } } : {}),
        });
        for (const w of warnings) process.stderr.write(`archway: warning: ${w}\n`);
        if (!opts.follow) {
          await out(`${job.id}\n`);
          return;
        }
        process.stderr.write(`archway: job ${job.id} (${job.arch}, ${job.image})\n`);
        const end = await followJob(api, job.id);
        process.stderr.write(describeEnd(job.id, end));
        process.exitCode = exitCodeOf(end);
      },
    );

  program
    .command('logs')
    .description("print a job's log (--follow: until the job ends)")
    .argument('<job>', 'job id')
    .option('--follow', 'keep printing as the job writes, until it ends')
    .action(async (id: string, opts: { follow?: boolean }) => {
      const api = client();
      if (opts.follow) {
        const end = await followJob(api, id);
        process.stderr.write(describeEnd(id, end));
        return;
      }
      const res = await api.request('GET', `/v1/jobs/${encodeURIComponent(id)}/log`, { timeoutMs: 60_000 });
      await out(await res.text());
    });

  program
    .command('cancel')
    .description('cancel a job: a queued one never starts, a running one is stopped within a second')
    .argument('<job>', 'job id')
    .action(async (id: string) => {
      const job = await client().json<JobRecord>('POST', `/v1/jobs/${encodeURIComponent(id)}/cancel`);
      await out(
        job.state === 'canceled'
          ? `canceled ${job.id}\n`
          : `cancel requested: ${job.id} is ${job.state}; its worker stops it within a second\n`,
      );
    });

  program
    .command('jobs')
    .description('list jobs, newest first')
    .option('--state <state>', 'queued, running, passed, failed, errored or canceled')
    .option('--arch <arch>', 'only this arch (aliases accepted)')
    .option('--label <key=value>', 'only jobs with this label')
    .option('--limit <n>', 'at most this many jobs', '20')
    .action(async (opts: { state?: string; arch?: string; label?: string; limit: string }) => {
      const limit = positiveNumber('--limit', opts.limit, true);
      const api = client();
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
      await out(
        table(
          ['ID', 'ARCH', 'STATE', 'REASON', 'IMAGE', 'CREATED'],
          jobs.map((j) => [
            j.id,
            j.arch,
            j.state,
            j.reason ?? (j.state === 'failed' && j.exitCode !== undefined ? `exit ${j.exitCode}` : ''),
            j.image,
            j.createdAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
          ]),
        ),
      );
      if (cursor) process.stderr.write(`archway: more jobs than --limit ${limit}\n`);
    });
}
