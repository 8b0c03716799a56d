/**
 * Log throughput from a real job to clients following its log over HTTP, with real processes
 * (redis-server, `archway api`, `archway worker`, runc): one job writes LOG_MB through
 * `yes | head -c`, F clients follow it (`GET /v1/jobs/:id/log?follow=1`, one TCP connection
 * each). Per run: MB/s at the slowest follower (first to last byte of the job's output; and to
 * the end of the follow, which also waits for the job's end, archway's last lines and the end
 * marker: how long that takes after the last byte is a column of its own), the worker's and
 * the API's peak RSS (VmRSS sampled every 50 ms), the Redis connections the follows held
 * (clients named `archway-api-follow`), the load average, and the
 * CPU seconds of each process (from /proc) during the transfer.
 *
 *   npm run bench:log-throughput   (as root; ARCHWAY_BENCH_LOG_MB=200 ARCHWAY_BENCH_LOG_FOLLOWERS=1,100
 *                                   ARCHWAY_BENCH_LOG_RUNS=3 ARCHWAY_BENCH_LOG_FSYNC=everysec,always;
 *                                   ARCHWAY_BENCH_PROFILE=DIR for CPU profiles)
 */
import { request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { createKeys } from '../../src/core/index.ts';
import {
  type BenchStack,
  cpuSeconds,
  loadAverage,
  machineCpuSeconds,
  rssMiB,
  startStack,
  waitForNodes,
} from './stack.ts';
import { machine, summarize } from './stats.ts';

const LOG_MB = Number(process.env.ARCHWAY_BENCH_LOG_MB ?? 200);
/** What the job writes when more than one client follows it (100 followers of 200 MB would be 20 GB through the API). */
const FANOUT_MB = Number(process.env.ARCHWAY_BENCH_LOG_FANOUT_MB ?? 20);
const FOLLOWERS = (process.env.ARCHWAY_BENCH_LOG_FOLLOWERS ?? '1,100').split(',').map(Number);
const RUNS = Number(process.env.ARCHWAY_BENCH_LOG_RUNS ?? 3);
/**
 * Redis's AOF fsync per row: `everysec` is what `archway up` and the fleet set-up in
 * docs/operations.md run, `always` (a flush per write, what the tests run) the strictest.
 */
const FSYNCS = (process.env.ARCHWAY_BENCH_LOG_FSYNC ?? 'everysec,always').split(',');
for (const f of FSYNCS)
  if (!['always', 'everysec', 'no'].includes(f))
    throw new Error(`ARCHWAY_BENCH_LOG_FSYNC: '${f}' is not an appendfsync setting (always, everysec, no)`);
const LINE = 'archway log throughput benchmark line of output';
const say = (line = '') => process.stderr.write(`${line}\n`);

/**
 * One follow over its own TCP connection: resolves with its byte count, the times of its first
 * and last byte of the job's own output (`jobBytes` from the first line on), and of its end.
 */
function follow(
  stack: BenchStack,
  id: string,
  jobBytes: number,
): Promise<{ bytes: number; first: number; last: number; end: number }> {
  return new Promise((resolve, reject) => {
    const req = request(`${stack.url}/v1/jobs/${id}/log?follow=1`, {
      agent: false,
      headers: { authorization: `Bearer ${stack.token}` },
    });
    req.on('error', reject);
    req.on('response', (res) => {
      if (res.statusCode !== 200) reject(new Error(`follow: ${res.statusCode}`));
      let bytes = 0;
      let first = 0;
      let last = 0;
      /** Where the job's output ends in the follow's bytes, once its start is known. */
      let outputEnd = Number.POSITIVE_INFINITY;
      res.on('data', (d: Buffer) => {
        // The job's own output starts with its first line (archway's header comes before it).
        if (!first) {
          const at = d.indexOf(LINE);
          if (at >= 0) {
            first = performance.now();
            outputEnd = bytes + at + jobBytes;
          }
        }
        bytes += d.length;
        if (!last && bytes >= outputEnd) last = performance.now();
      });
      res.on('end', () => resolve({ bytes, first, last, end: performance.now() }));
      res.on('error', reject);
    });
    req.end();
  });
}

interface Run {
  /** First to last byte of the job's output at the slowest follower, MB/s. */
  mbps: number;
  /** First byte of the job's output to the end of the slowest follow (the job's end, its last lines and the end marker included), MB/s. */
  endMbps: number;
  /** The slowest follow's end after its last byte of the job's output, ms. */
  tailMs: number;
  /** Bytes delivered to all the followers over the same time, MB/s. */
  totalMbps: number;
  /** The worker's side: job running -> its log written, MB/s. */
  writerMbps: number;
  workerRss: number;
  apiRss: number;
  readers: number;
  load: number;
  cpu: Record<string, number>;
  busy: number;
}

async function oneRun(
  stack: BenchStack,
  workerPid: number,
  followers: number,
  redisPid: number,
): Promise<Run> {
  const bytes = (followers > 1 ? FANOUT_MB : LOG_MB) * 1_000_000;
  const redis = new Redis(stack.redis.url);
  const pids = { worker: workerPid, api: stack.apiProcess.pid as number, redis: redisPid };
  const cpu0 = Object.fromEntries(
    await Promise.all(Object.entries(pids).map(async ([k, p]) => [k, await cpuSeconds(p)])),
  );
  const self0 = process.cpuUsage();
  const m0 = await machineCpuSeconds();
  let workerRss = 0;
  let apiRss = 0;
  let readers = 0;
  const loads: number[] = [];
  let sampling = true;
  const sampler = (async () => {
    for (let i = 0; sampling; i++) {
      workerRss = Math.max(workerRss, await rssMiB(workerPid));
      apiRss = Math.max(apiRss, await rssMiB(pids.api));
      if (i % 4 === 0) {
        const list = String(await redis.call('CLIENT', 'LIST'));
        readers = Math.max(
          readers,
          list.split('\n').filter((l) => l.includes('name=archway-api-follow')).length,
        );
        loads.push(await loadAverage());
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const res = await stack.api('/v1/jobs', {
    method: 'POST',
    body: JSON.stringify({ arch: 'amd64', image: 'busybox', script: `yes '${LINE}' | head -c ${bytes}` }),
  });
  const { job } = (await res.json()) as { job: { id: string } };
  const follows = await Promise.all(Array.from({ length: followers }, () => follow(stack, job.id, bytes)));
  sampling = false;
  await sampler;
  const cpu1 = Object.fromEntries(
    await Promise.all(Object.entries(pids).map(async ([k, p]) => [k, await cpuSeconds(p)])),
  );
  const self = process.cpuUsage(self0);
  const m1 = await machineCpuSeconds();
  const final = (await (await stack.api(`/v1/jobs/${job.id}`)).json()) as {
    state: string;
    reason?: string;
    attempts?: { error?: string }[];
    logBytes: number;
    startedAt: string;
    finishedAt: string;
  };
  // The run's log goes now, as its retention would later: 9 runs of 200 MB would otherwise hold
  // 1.8 GB in Redis, and the AOF rewrites that growth sets off ran under the later runs (and
  // rows): the rows' order moved their medians more than anything measured.
  await redis.del(createKeys(stack.prefix).log(job.id));
  redis.disconnect();
  if (final.state !== 'passed' || final.logBytes !== bytes)
    throw new Error(
      `job ${job.id}: ${final.state} (${final.reason ?? ''} ${final.attempts?.at(-1)?.error ?? ''}), ${final.logBytes} bytes logged`,
    );
  for (const f of follows)
    if (f.bytes < bytes) throw new Error(`a follower got ${f.bytes} of ${bytes} bytes`);
  const first = Math.min(...follows.map((f) => f.first));
  const last = Math.max(...follows.map((f) => f.last));
  const end = Math.max(...follows.map((f) => f.end));
  const cpu: Record<string, number> = {};
  for (const k of Object.keys(pids)) cpu[k] = (cpu1[k] as number) - (cpu0[k] as number);
  cpu.client = (self.user + self.system) / 1e6;
  const writerS = (Date.parse(final.finishedAt) - Date.parse(final.startedAt)) / 1000;
  return {
    mbps: bytes / 1e6 / ((last - first) / 1000),
    endMbps: bytes / 1e6 / ((end - first) / 1000),
    tailMs: end - last,
    totalMbps: (followers * bytes) / 1e6 / ((last - first) / 1000),
    writerMbps: bytes / 1e6 / writerS,
    workerRss,
    apiRss,
    readers,
    load: Math.max(...loads),
    cpu,
    busy: m1.busy - m0.busy,
  };
}

say(`### Log throughput to following clients, ${new Date().toISOString().slice(0, 10)}`);
say();
say(
  `Machine: ${await machine()}. One job writing ${LOG_MB} MB (\`yes | head -c\`) for one follower, ${FANOUT_MB} MB for more; ${RUNS} runs per row; median (min-max).`,
);
say();
say(
  '| followers | appendfsync | MB/s at the slowest follower (first to last byte of the output) | the same to the end of the follow | end of the follow after the last byte, ms | MB/s to all followers | worker side MB/s | worker peak RSS MiB | API peak RSS MiB | Redis follow connections | load avg | CPU s: worker / API / redis / clients / machine | AOF rewrites in the row (each of what Redis then holds) |',
);
say('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
const stack = await startStack();
try {
  const worker = stack.addWorker('amd64', {
    slots: 1,
    warm: 1,
    env: { ARCHWAY_LOG_LIMIT_MIB: String(LOG_MB + 16) },
  });
  await waitForNodes(stack, 'amd64', 1);
  const probe = new Redis(stack.redis.url);
  const redisPid = Number(/process_id:(\d+)/.exec(await probe.info('server'))?.[1]);
  probe.disconnect();
  for (const f of FOLLOWERS)
    for (const fsync of FSYNCS) {
      const conf = new Redis(stack.redis.url);
      await conf.config('SET', 'appendfsync', fsync);
      const rewrites = async () =>
        Number(/aof_rewrites:(\d+)/.exec(String(await conf.info('persistence')))?.[1] ?? 0);
      const rewrites0 = await rewrites();
      const runs: Run[] = [];
      for (let i = 0; i < RUNS; i++) runs.push(await oneRun(stack, worker.pid as number, f, redisPid));
      const rewritten = (await rewrites()) - rewrites0;
      conf.disconnect();
      const cell = (xs: number[], d = 0) => {
        const s = summarize(xs);
        return `${s.p50.toFixed(d)} (${s.min.toFixed(d)}-${s.max.toFixed(d)})`;
      };
      const med = (k: string) => summarize(runs.map((r) => r.cpu[k] as number)).p50.toFixed(1);
      say(
        `| ${f} | ${fsync} | ${cell(runs.map((r) => r.mbps))} | ${cell(runs.map((r) => r.endMbps))} | ${cell(runs.map((r) => r.tailMs))} | ${cell(runs.map((r) => r.totalMbps))} | ${cell(runs.map((r) => r.writerMbps))} | ${cell(runs.map((r) => r.workerRss))} | ${cell(runs.map((r) => r.apiRss))} | ${cell(runs.map((r) => r.readers))} | ${cell(
          runs.map((r) => r.load),
          1,
        )} | ${med('worker')} / ${med('api')} / ${med('redis')} / ${med('client')} / ${summarize(runs.map((r) => r.busy)).p50.toFixed(1)} | ${rewritten} |`,
      );
    }
} finally {
  await stack.close();
}
