/**
 * Log followers benchmark, on loopback with a real redis-server and the API of `buildApp`
 * listening: F SSE followers of one running job; the job then writes CHUNKS log chunks (one
 * XADD each, as a worker's flushes are) and ends. Measured per run: the time from the first
 * write to the last follower's `end` event, and the Redis connections the API held meanwhile
 * (CLIENT LIST, less those before the follows).
 *
 *   npx tsx test/bench/log-fanout.ts   (ARCHWAY_BENCH_FOLLOWERS=1,100,300 ARCHWAY_BENCH_CHUNKS=400 ARCHWAY_BENCH_RUNS=5)
 */
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { createJobQueue, createLogWriter, createNodeRegistry } from '../../queue/index.ts';
import { buildApp, createApiStores } from '../../src/api/index.ts';
import { ApiConfig, createKeys, createLogger, JobSpec, parseConfig } from '../../src/core/index.ts';
import { startRedis } from '../support/redis-server.ts';
import { machine, ms, summarize } from './stats.ts';

const FOLLOWERS = (process.env.ARCHWAY_BENCH_FOLLOWERS ?? '1,100,300').split(',').map(Number);
const CHUNKS = Number(process.env.ARCHWAY_BENCH_CHUNKS ?? 400);
const RUNS = Number(process.env.ARCHWAY_BENCH_RUNS ?? 5);
const say = (line = '') => process.stderr.write(`${line}\n`);

const server = await startRedis();
const redis = new Redis(server.url);
const keys = createKeys(`bench${randomBytes(3).toString('hex')}`);
const queue = createJobQueue({ redis, keys, logRetentionSeconds: 600 });
const token = `bench-${randomBytes(12).toString('hex')}`;
const max = Math.max(...FOLLOWERS);
const app = buildApp(
  parseConfig(ApiConfig, {
    REDIS_URL: server.url,
    ARCHWAY_REDIS_PREFIX: keys.prefix,
    ARCHWAY_TOKEN: token,
    ARCHWAY_LOG_FOLLOWERS_PER_JOB: String(max),
    ARCHWAY_LOG_FOLLOWERS_MAX: String(max),
  }),
  {
    redis,
    queue,
    nodes: createNodeRegistry(redis, keys),
    ...createApiStores({ redis, keys, queue, nodes: createNodeRegistry(redis, keys) }),
    keys,
    logger: createLogger({ name: 'bench', level: 'silent' }),
    createBlockingRedis: () => new Redis(server.url, { maxRetriesPerRequest: null }),
  },
);
const base = await app.listen({ host: '127.0.0.1', port: 0 });
const clients = async () =>
  String(await redis.call('CLIENT', 'LIST'))
    .trim()
    .split('\n').length;

/** One SSE follow; resolves `ready` once the first event came, `ended` with the time of its `end` event. */
function follow(id: string): { ready: Promise<void>; ended: Promise<number> } {
  let ready: () => void = () => {};
  const readyP = new Promise<void>((r) => {
    ready = r;
  });
  const ended = new Promise<number>((resolve, reject) => {
    const req = request(`${base}/v1/jobs/${id}/log`, {
      agent: false,
      headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
    });
    req.on('error', reject);
    req.on('response', (res) => {
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        buf += d;
        if (buf.includes('event: log')) ready();
        if (buf.includes('event: end')) resolve(performance.now());
        if (buf.length > 4096) buf = buf.slice(-64);
      });
    });
    req.end();
  });
  return { ready: readyP, ended };
}

say(`### Log followers, ${new Date().toISOString().slice(0, 10)}`);
say();
say(`Machine: ${await machine()}. ${CHUNKS} chunks of ~40 bytes, ${RUNS} runs per row.`);
say();
say(
  '| followers | last `end` after the first write, ms: p50 (min-max) | Redis connections held by the follows |',
);
say('| --- | --- | --- |');
for (const f of FOLLOWERS) {
  const times: number[] = [];
  const held: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const { job } = await queue.submit(JobSpec.parse({ arch: 'amd64', image: 'busybox', script: 'true' }), {
      clientId: 'bench',
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
    await log.note('start\n');
    const before = await clients();
    const follows = Array.from({ length: f }, () => follow(job.id));
    await Promise.all(follows.map((x) => x.ready));
    // The job's reader opens once a follower has caught up: give it a moment, then count.
    await new Promise((r) => setTimeout(r, 200));
    held.push((await clients()) - before);
    const t0 = performance.now();
    for (let i = 0; i < CHUNKS; i++) await log.note(`line ${i} of the benchmark's log\n`);
    await log.end(600);
    await queue.store.transition(job.id, 'passed', { attempt: 1, fields: { exitCode: 0 } });
    const ends = await Promise.all(follows.map((x) => x.ended));
    times.push(Math.max(...ends) - t0);
  }
  const t = summarize(times);
  const c = summarize(held);
  say(`| ${f} | ${ms(t.p50)} (${ms(t.min)}-${ms(t.max)}) | ${c.p50} (${c.min}-${c.max}) |`);
}
await app.close();
await queue.close();
redis.disconnect();
await server.stop();
