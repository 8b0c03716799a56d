import { randomBytes } from 'node:crypto';
import { type IncomingMessage, request } from 'node:http';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogWriter, type JobQueue, type LogData, type LogWriter } from '../../queue/index.ts';
import { createLogFanout } from '../../src/api/log-fanout.ts';
import { JobSpec, type Keys } from '../../src/core/index.ts';
import { startTestApi, type TestApi } from '../support/test-api.ts';
import { eventually } from '../support/test-host.ts';

// Issue 9, point 9: SSE followers of a job share one Redis reader, and are capped with a 429.
const TOKEN = `admin-${randomBytes(12).toString('hex')}`;
const FOLLOWERS = 300;
/** A follower whose client reads nothing for this long is cut off. */
const STALL_S = 2;
let api: TestApi;
let redis: Redis;
let keys: Keys;
let queue: JobQueue;
let base: string;
const opened: Redis[] = [];

beforeAll(async () => {
  api = await startTestApi({
    name: 'fan',
    env: {
      ARCHWAY_TOKEN: TOKEN,
      ARCHWAY_LOG_FOLLOWERS_PER_JOB: String(FOLLOWERS),
      ARCHWAY_LOG_FOLLOWERS_MAX: String(FOLLOWERS + 5),
      ARCHWAY_LOG_FOLLOW_STALL_SECONDS: String(STALL_S),
    },
    onBlockingRedis: (r) => opened.push(r),
    listen: true,
  });
  ({ redis, keys, queue, url: base } = api);
});

afterAll(() => api?.close());

async function runningJob(): Promise<{ id: string; log: LogWriter }> {
  const { job } = await queue.submit(JobSpec.parse({ arch: 'amd64', image: 'busybox', script: 'true' }), {
    clientId: 't',
  });
  await queue.store.transition(job.id, 'running', { newAttempt: true });
  const log = createLogWriter({
    redis,
    keys,
    jobId: job.id,
    limitBytes: 64e6,
    secrets: [],
    onLimit: () => {},
  });
  return { id: job.id, log };
}

async function finish(id: string, log: LogWriter) {
  await log.end(60);
  await queue.store.transition(id, 'passed', { attempt: 1, fields: { exitCode: 0 } });
}

interface Follower {
  res: IncomingMessage;
  /** Every `log` event's data so far, in order. */
  chunks: string[];
  ended: Promise<{ end: unknown; chunks: string[] }>;
}

/** Opens one SSE follow of its own (no shared agent: one TCP connection each). */
function follow(id: string): Promise<Follower | { status: number; body: string; retryAfter?: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}/v1/jobs/${id}/log`, {
      agent: false,
      headers: { authorization: `Bearer ${TOKEN}`, accept: 'text/event-stream' },
    });
    req.on('error', reject);
    req.on('response', (res) => {
      res.setEncoding('utf8');
      if (res.statusCode !== 200) {
        let body = '';
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body, retryAfter: String(res.headers['retry-after']) }),
        );
        return;
      }
      const chunks: string[] = [];
      let buf = '';
      let end: unknown;
      const ended = new Promise<{ end: unknown; chunks: string[] }>((done, fail) => {
        res.on('data', (d: string) => {
          buf += d;
          for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const event = /^event: (.*)$/m.exec(block)?.[1];
            const data = /^data: (.*)$/m.exec(block)?.[1];
            if (event === 'log') chunks.push(JSON.parse(data ?? '""'));
            if (event === 'end') end = JSON.parse(data ?? 'null');
          }
        });
        res.on('end', () => done({ end, chunks }));
        res.on('error', fail);
      });
      resolve({ res, chunks, ended });
    });
    req.end();
  });
}

const clients = async () =>
  String(await redis.call('CLIENT', 'LIST'))
    .trim()
    .split('\n').length;

describe('log followers share one reader per job', () => {
  it(`${FOLLOWERS} SSE followers hold one Redis connection, and each gets the whole log in order`, async () => {
    const { id, log } = await runningJob();
    const lines = Array.from({ length: 400 }, (_, i) => `line ${i} ${'x'.repeat(i % 50)}\n`);
    for (const l of lines.slice(0, 100)) await log.note(l);
    const baseline = await clients();

    const followers = (await Promise.all(Array.from({ length: FOLLOWERS }, () => follow(id)))) as Follower[];
    expect(followers.every((f) => 'res' in f)).toBe(true);
    await eventually(
      () => followers.every((f) => f.chunks.length >= 100),
      'every follower to catch up',
      30_000,
    );
    for (const l of lines.slice(100, 300)) await log.note(l);
    expect(await clients()).toBeLessThanOrEqual(baseline + 1);
    expect(opened.filter((r) => r.status !== 'end')).toHaveLength(1);
    for (const l of lines.slice(300)) await log.note(l);
    await finish(id, log);

    const results = await Promise.all(followers.map((f) => f.ended));
    const expected = lines;
    for (const r of results) {
      expect(r.end).toEqual({ state: 'passed', exitCode: 0, reason: null });
      expect(r.chunks).toEqual(expected);
    }
    // The last follower gone, the job's reader has closed its connection.
    await eventually(() => opened.every((r) => r.status === 'end'), "the reader's connection to close");
    await eventually(async () => (await clients()) <= baseline, 'the connection count to drop back');
  }, 120_000);

  it('a follower that stops reading falls behind the shared reader, then catches up from Redis, in order', async () => {
    const { id, log } = await runningJob();
    const fanout = createLogFanout({
      redis,
      keys,
      createBlockingRedis: () => new Redis(api.redisUrl, { maxRetriesPerRequest: null }),
      isFinished: async () => (await queue.get(id))?.state === 'passed',
      maxPerJob: 10,
      maxTotal: 10,
    });
    const stop = new AbortController();
    const fast = fanout.join(id);
    const slow = fanout.join(id);
    const fastGot: string[] = [];
    const fastDone = (async () => {
      for await (const page of fast.pages(undefined, stop.signal))
        for (const c of page) fastGot.push(c.data.toString());
    })();
    const slowIt = slow.pages(undefined, stop.signal);
    await log.note('first\n');
    expect(((await slowIt.next()).value as LogData[]).map((c) => c.data.toString())).toEqual(['first\n']);
    // 3 MiB while the slow one reads nothing: more than the reader keeps for caught-up followers.
    const big = Array.from({ length: 200 }, (_, i) => `big ${i} ${'y'.repeat(16_000)}\n`);
    for (const b of big) await log.note(b);
    await eventually(() => fastGot.length === 201, 'the fast follower to get everything');
    expect(fanout.readers).toBe(1);
    await finish(id, log);
    const rest: string[] = [];
    for await (const page of { [Symbol.asyncIterator]: () => slowIt })
      for (const c of page) rest.push(c.data.toString());
    expect(rest).toEqual(big);
    await fastDone;
    expect(fastGot).toEqual(['first\n', ...big]);
    fast.leave();
    slow.leave();
    expect(fanout.readers).toBe(0);
    expect(fanout.followers).toBe(0);
    fanout.close();
  });

  it('a client that stops reading is cut off after ARCHWAY_LOG_FOLLOW_STALL_SECONDS, not buffered for; the others get everything', async () => {
    const { id, log } = await runningJob();
    const stalled = (await follow(id)) as Follower;
    const active = (await follow(id)) as Follower;
    stalled.res.pause();
    // 32 MiB: more than the loopback connection's buffers take, so the API's writes to it wait.
    const piece = `${'z'.repeat(16 * 1024 - 1)}\n`;
    for (let i = 0; i < 2048; i++) await log.write(Buffer.from(piece));
    await eventually(
      () => active.chunks.join('').length === 2048 * piece.length,
      'the active follower to get it all',
      30_000,
    );
    await new Promise((r) => setTimeout(r, (STALL_S + 1.5) * 1000));
    await finish(id, log);
    const a = await active.ended;
    expect(a.end).toEqual({ state: 'passed', exitCode: 0, reason: null });
    stalled.res.resume();
    // What the kernel had buffered still arrives; then the stream ends short, without `end`.
    const s = await stalled.ended.catch(() => ({ end: undefined, chunks: stalled.chunks }));
    expect(s.end).toBeUndefined();
    expect(s.chunks.join('').length).toBeLessThan(2048 * piece.length);
    expect(s.chunks.join('')).toBe(a.chunks.join('').slice(0, s.chunks.join('').length));
  }, 60_000);

  it('followers over the cap of a job, or of the API, get a clear 429; a place frees when one leaves', async () => {
    const a = await runningJob();
    const b = await runningJob();
    const onA = (await Promise.all(Array.from({ length: FOLLOWERS }, () => follow(a.id)))) as Follower[];
    const more = await follow(a.id);
    expect(more).toMatchObject({ status: 429, retryAfter: '10' });
    expect(JSON.parse((more as { body: string }).body).error).toEqual({
      code: 'TOO_MANY_FOLLOWERS',
      message: `job ${a.id} already has ${FOLLOWERS} log followers (ARCHWAY_LOG_FOLLOWERS_PER_JOB); read the log without following, or try again later`,
    });
    const onB = (await Promise.all(Array.from({ length: 5 }, () => follow(b.id)))) as Follower[];
    expect(onB.every((f) => 'res' in f)).toBe(true);
    const overTotal = await follow(b.id);
    expect(overTotal).toMatchObject({ status: 429 });
    expect((overTotal as { body: string }).body).toContain('ARCHWAY_LOG_FOLLOWERS_MAX');
    // The log itself, without following, is still served.
    const plain = await api.app.inject({
      method: 'GET',
      url: `/v1/jobs/${b.id}/log`,
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(plain.statusCode).toBe(200);
    // One leaves: its place is free again.
    const gone = onB[0] as Follower;
    gone.res.destroy();
    await eventually(
      async () =>
        'res' in
        (await follow(b.id).then((f) => {
          if ('res' in f) onB.push(f);
          return f;
        })),
      'a place to free',
      10_000,
    );
    await finish(a.id, a.log);
    await finish(b.id, b.log);
    await Promise.all([...onA, ...onB.slice(1)].map((f) => f.ended));
  }, 120_000);
});
