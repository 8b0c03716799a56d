/**
 * Scaler reaction time, with real processes (redis-server, `archway scaler` with the local
 * provider, the `archway worker` processes it starts): from a burst of jobs on an amd64 pool with
 * no node to the first new node taking a job, split into the scaler's decision (`desired` written),
 * the node registered, and the first job taken. Between runs the pool drains back to 0 nodes.
 *
 *   npm run bench:scaler      (as root; ARCHWAY_BENCH_RUNS=5, ARCHWAY_BENCH_BURST=4)
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { createJobQueue, createNodeRegistry, createPoolStore } from '../../queue/index.ts';
import { createKeys, FINAL_STATES, JobSpec } from '../../src/core/index.ts';
import { startRedis } from '../support/redis-server.ts';
import { BENCH_ENV } from './stack.ts';
import { machine, summarize } from './stats.ts';

const RUNS = Number(process.env.ARCHWAY_BENCH_RUNS ?? 5);
const BURST = Number(process.env.ARCHWAY_BENCH_BURST ?? 4);
const BIN = new URL('../../bin/archway', import.meta.url).pathname;
/** The scaler's settings: the defaults, but a short scale-down delay so runs follow each other quickly. */
const SCALER_ENV = {
  ARCHWAY_SCALER_PROVIDER: 'local',
  ARCHWAY_SCALER_ARCHES: 'amd64',
  ARCHWAY_SCALER_DOWN_AFTER_SECONDS: '5',
};

const out: string[] = [];
const say = (line = '') => {
  out.push(line);
  process.stderr.write(`${line}\n`);
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const server = await startRedis();
const client = new Redis(server.url, { maxRetriesPerRequest: null });
const keys = createKeys(`bs${randomBytes(3).toString('hex')}`);
const queue = createJobQueue({ redis: client, keys, logRetentionSeconds: 600 });
const nodes = createNodeRegistry(client, keys);
const pools = createPoolStore(client, keys);
await pools.set('amd64', { min: 0, max: 2, slotsPerNode: 2 });
const scaler: ChildProcess = spawn(BIN, ['scaler'], {
  env: {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    ...BENCH_ENV,
    ...SCALER_ENV,
    REDIS_URL: server.url,
    ARCHWAY_REDIS_PREFIX: keys.prefix,
  },
  stdio: ['ignore', 'ignore', 'inherit'],
});

async function until(check: () => Promise<boolean>, what: string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}

const decision: number[] = [];
const registered: number[] = [];
const taken: number[] = [];
try {
  for (let run = 0; run < RUNS; run++) {
    await until(async () => (await nodes.list()).length === 0, 'the pool to be empty', 120_000);
    // Bursts fall anywhere within the scaler's 2 s interval.
    await sleep(1000 + Math.random() * 2000);
    const t0 = Date.now();
    const ids: string[] = [];
    for (let i = 0; i < BURST; i++) {
      const spec = JobSpec.parse({ arch: 'amd64', image: 'busybox', script: `echo burst-${run}-${i}` });
      ids.push((await queue.submit(spec, { clientId: 'bench' })).job.id);
    }
    let tDecision = 0;
    let tRegistered = 0;
    let tTaken = 0;
    await until(
      async () => {
        const now = Date.now();
        if (!tDecision && ((await pools.get('amd64')).desired ?? 0) > 0) tDecision = now;
        if (!tRegistered) {
          const first = (await nodes.list()).map((n) => Date.parse(n.startedAt)).sort()[0];
          if (first !== undefined) tRegistered = Math.max(first, t0);
        }
        const jobs = await Promise.all(ids.map((id) => queue.get(id)));
        const starts = jobs.flatMap((j) => (j?.startedAt ? [Date.parse(j.startedAt)] : [])).sort();
        if (!tTaken && starts[0] !== undefined) tTaken = starts[0];
        return jobs.every((j) => j && FINAL_STATES.includes(j.state));
      },
      'the burst to finish',
      120_000,
    );
    const states = await Promise.all(ids.map(async (id) => (await queue.get(id))?.state));
    if (states.some((s) => s !== 'passed')) throw new Error(`run ${run}: jobs ended ${states.join(', ')}`);
    decision.push(tDecision - t0);
    registered.push(tRegistered - t0);
    taken.push(tTaken - t0);
    process.stderr.write(
      `run ${run + 1}: decision ${tDecision - t0} ms, node registered ${tRegistered - t0} ms, first job taken ${tTaken - t0} ms\n`,
    );
  }
} finally {
  scaler.kill('SIGTERM');
  await new Promise((r) => (scaler.exitCode !== null ? r(undefined) : scaler.once('exit', r)));
  await queue.close();
  client.disconnect();
  await server.stop();
}

const sec = (ms: number) => (ms / 1000).toFixed(1);
const row = (what: string, samples: number[]) => {
  const s = summarize(samples);
  say(`| ${what} | ${sec(s.min)} | ${sec(s.p50)} | ${sec(s.max)} |`);
};
say(`### Scaler reaction, ${new Date().toISOString().slice(0, 10)}`);
say();
say(`Machine: ${await machine()}.`);
say();
say(
  `A burst of ${BURST} jobs (\`echo\`) on an amd64 pool with no node (min 0, max 2, 2 slots per node); \`archway scaler\` with the local provider and its default settings (a pass every 2 s) but ARCHWAY_SCALER_DOWN_AFTER_SECONDS=5, so the pool is back to 0 between runs. ${RUNS} runs, each burst at a random point of the scaler's interval; seconds from the submission of the burst.`,
);
say();
say('| to | min | median | max |');
say('| --- | --- | --- | --- |');
row('the scaler writes `desired` (its decision)', decision);
row('the first new node registered (worker process started, runtime ready)', registered);
row('**the first new node takes a job**', taken);
process.stdout.write(`${out.join('\n')}\n`);
