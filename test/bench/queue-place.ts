/**
 * A queued job's place in its arch's queue (issue #13), on a real redis-server: for queues of
 * each size N (jobs of random priority 1-10), the time of `JobQueue.place` (one Lua round trip)
 * for the last job in line, and of `GET /v1/jobs/:id` (the app of `buildApp`, through inject:
 * the record, the place and the job's own estimate) for the same job. ZRANK is O(log N): the
 * time should not grow with N.
 *
 *   npx tsx test/bench/queue-place.ts   (ARCHWAY_BENCH_SIZES=100,10000,100000 ARCHWAY_BENCH_SAMPLES=200)
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { createJobQueue, createNodeRegistry } from '../../queue/index.ts';
import { buildApp, createApiStores } from '../../src/api/index.ts';
import { ApiConfig, createKeys, createLogger, JobSpec, parseConfig } from '../../src/core/index.ts';
import { startRedis } from '../support/redis-server.ts';
import { machine, ms, summarize } from './stats.ts';

const SIZES = (process.env.ARCHWAY_BENCH_SIZES ?? '100,10000,100000').split(',').map(Number);
const SAMPLES = Number(process.env.ARCHWAY_BENCH_SAMPLES ?? 200);
const say = (line = '') => process.stderr.write(`${line}\n`);

const server = await startRedis();
const redis = new Redis(server.url);
say(`machine: ${await machine()}`);
say(`samples per figure: ${SAMPLES}`);
say('');
say(
  '| queued jobs | place() p50 / p90 / max ms | GET /v1/jobs/:id p50 / p90 / max ms | position of the job read |',
);
say('| --- | --- | --- | --- |');
try {
  for (const size of SIZES) {
    const keys = createKeys(`bench${randomBytes(3).toString('hex')}`);
    const queue = createJobQueue({ redis, keys, logRetentionSeconds: 600 });
    const nodes = createNodeRegistry(redis, keys);
    const token = `bench-${randomBytes(12).toString('hex')}`;
    const app = buildApp(
      parseConfig(ApiConfig, {
        REDIS_URL: server.url,
        ARCHWAY_REDIS_PREFIX: keys.prefix,
        ARCHWAY_TOKEN: token,
      }),
      {
        redis,
        queue,
        nodes,
        ...createApiStores({ redis, keys, queue, nodes }),
        keys,
        logger: createLogger({ name: 'bench', level: 'silent' }),
        createBlockingRedis: () => new Redis(server.url, { maxRetriesPerRequest: null }),
      },
    );
    await app.ready();
    // Random priorities, then the last one in line: priority 10, submitted last.
    for (let i = 0; i < size - 1; i += 100) {
      await Promise.all(
        Array.from({ length: Math.min(100, size - 1 - i) }, () =>
          queue.submit(
            JobSpec.parse({
              arch: 'amd64',
              image: 'busybox',
              script: 'true',
              priority: 1 + Math.floor(Math.random() * 10),
            }),
            { clientId: 'bench' },
          ),
        ),
      );
    }
    const { job } = await queue.submit(
      JobSpec.parse({ arch: 'amd64', image: 'busybox', script: 'true', priority: 10 }),
      { clientId: 'bench' },
    );
    const place: number[] = [];
    const get: number[] = [];
    let position = 0;
    for (let i = 0; i < SAMPLES; i++) {
      const t0 = performance.now();
      const p = await queue.place(job);
      place.push(performance.now() - t0);
      if (p?.status === 'waiting') position = p.position;
      const t1 = performance.now();
      const res = await app.inject({
        method: 'GET',
        url: `/v1/jobs/${job.id}`,
        headers: { authorization: `Bearer ${token}` },
      });
      get.push(performance.now() - t1);
      if (res.statusCode !== 200 || res.json().queue?.position !== size)
        throw new Error(`GET answered ${res.statusCode} ${res.body.slice(0, 200)}`);
    }
    const a = summarize(place);
    const b = summarize(get);
    say(
      `| ${size} | ${ms(a.p50)} / ${ms(a.p90)} / ${ms(a.max)} | ${ms(b.p50)} / ${ms(b.p90)} / ${ms(b.max)} | ${position} of ${size} |`,
    );
    await app.close();
    await queue.close();
  }
} finally {
  redis.disconnect();
  await server.stop();
}
