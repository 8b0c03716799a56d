/**
 * End-to-end benchmark through the API, with real processes (redis-server, `archway api`,
 * `archway worker`): submit -> first line of the job's output at a following client, per arch;
 * 2,000 trivial jobs across 4 workers, checking that none was lost or run twice, with where the
 * time and the CPU went. Log throughput has a benchmark of its own (log-throughput.ts).
 *
 *   npm run bench:jobs      (as root; ARCHWAY_BENCH_RUNS=30 ARCHWAY_BENCH_JOBS=2000,
 *                            ARCHWAY_BENCH_ONLY=latency|jobs for one part; ARCHWAY_TEST_REDIS=cluster
 *                            for a 3-primary Redis Cluster)
 */
import { performance } from 'node:perf_hooks';
import { ARCHES, createKeys, createRedis } from '../../src/core/index.ts';
import {
  childrenCpuSeconds,
  containersCpuSeconds,
  cpuSeconds,
  loadAverage,
  machineCpuSeconds,
  startStack,
  waitForNodes,
} from './stack.ts';
import { machine, ms, summarize } from './stats.ts';

const RUNS = Number(process.env.ARCHWAY_BENCH_RUNS ?? 30);
const JOBS = Number(process.env.ARCHWAY_BENCH_JOBS ?? 2000);
/** Run one part only: latency or jobs. */
const ONLY = process.env.ARCHWAY_BENCH_ONLY;
const part = (name: string) => !ONLY || ONLY === name;
const out: string[] = [];
const say = (line = '') => {
  out.push(line);
  process.stderr.write(`${line}\n`);
};

say(`### Jobs through the API, ${new Date().toISOString().slice(0, 10)}`);
say();
say(`Machine: ${await machine()}.`);

// 1. Submit -> first output line at a following client, per arch.
if (part('latency')) {
  const stack = await startStack();
  try {
    for (const arch of ARCHES) stack.addWorker(arch, { slots: 2, warm: 1 });
    for (const arch of ARCHES) await waitForNodes(stack, arch, 1);
    say();
    say(
      `Submit -> first line of the job's output (\`echo first-line\`) at a client following the log (HTTP, \`?follow=1\`); ${RUNS} jobs per arch, one at a time; ms.`,
    );
    say();
    say('| arch | min | p50 | p90 | p99 | max |');
    say('| --- | --- | --- | --- | --- | --- |');
    for (const arch of ARCHES) {
      const samples: number[] = [];
      for (let i = 0; i < RUNS + 1; i++) {
        const t0 = performance.now();
        const res = await stack.api('/v1/jobs', {
          method: 'POST',
          body: JSON.stringify({ arch, image: 'busybox', script: 'echo first-line' }),
        });
        const { job } = (await res.json()) as { job: { id: string } };
        const log = await stack.api(`/v1/jobs/${job.id}/log?follow=1`);
        const reader = (log.body as ReadableStream<Uint8Array>).getReader();
        let text = '';
        let first = 0;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          text += Buffer.from(value).toString();
          if (!first && text.includes('first-line\n')) first = performance.now() - t0;
        }
        if (!first) throw new Error(`job ${job.id} never printed its line: ${text}`);
        if (i > 0) samples.push(first); // the first run warms the API and the connections
        // let the warm pool refill, as a steady trickle of jobs would
        await new Promise((r) => setTimeout(r, 300));
      }
      const s = summarize(samples);
      say(
        `| ${arch}${arch === 'amd64' ? '' : ' (emulated)'} | ${ms(s.min)} | ${ms(s.p50)} | ${ms(s.p90)} | ${ms(s.p99)} | ${ms(s.max)} |`,
      );
    }
  } finally {
    await stack.close();
  }
}

// 2. JOBS trivial jobs across 4 workers: throughput, none lost, none run twice.
if (part('jobs')) {
  const stack = await startStack();
  try {
    for (let i = 0; i < 4; i++) stack.addWorker('amd64', { slots: 2, warm: 2 });
    await waitForNodes(stack, 'amd64', 4);
    // createRedis: ARCHWAY_TEST_REDIS=cluster runs the stack on a 3-primary Redis Cluster.
    const redis = createRedis({ url: stack.redis.url, name: 'bench' });
    const cluster = redis as unknown as { isCluster?: boolean; nodes?: (role: 'master') => (typeof redis)[] };
    await redis.ping(); // a Cluster client knows its nodes once it is ready
    const servers = cluster.isCluster && cluster.nodes ? cluster.nodes('master') : [redis];
    const redisPids = await Promise.all(
      servers.map(async (r) => Number(/process_id:(\d+)/.exec(await r.info('server'))?.[1])),
    );
    const pids: [string, number][] = [
      ['api', stack.apiProcess.pid as number],
      ...stack.workers.map((w, i): [string, number] => [`worker ${i + 1}`, w.pid as number]),
      ...redisPids.map((p, i): [string, number] => [`redis${redisPids.length > 1 ? ` ${i + 1}` : ''}`, p]),
    ];
    const cpu0 = await Promise.all(pids.map(([, p]) => cpuSeconds(p)));
    const workerPids = stack.workers.map((w) => w.pid as number);
    const kids0 = await Promise.all(workerPids.map(childrenCpuSeconds));
    const box0 = await containersCpuSeconds();
    const self0 = process.cpuUsage();
    const m0 = await machineCpuSeconds();
    const loads: number[] = [];
    const t0 = performance.now();
    const ids: string[] = [];
    const submitOne = async (i: number) => {
      const res = await stack.api('/v1/jobs', {
        method: 'POST',
        headers: { 'idempotency-key': `bench-${i}` },
        body: JSON.stringify({
          arch: 'amd64',
          image: 'busybox',
          script: `echo job-${i}`,
          labels: { bench: 'throughput' },
        }),
      });
      if (res.status !== 201) throw new Error(`submit ${i}: ${res.status} ${await res.text()}`);
      ids[i] = ((await res.json()) as { job: { id: string } }).job.id;
    };
    for (let i = 0; i < JOBS; i += 50)
      await Promise.all(Array.from({ length: Math.min(50, JOBS - i) }, (_, k) => submitOne(i + k)));
    const submitted = performance.now() - t0;
    const keys = createKeys(stack.prefix);
    let finished = 0;
    while (finished < JOBS) {
      await new Promise((r) => setTimeout(r, 500));
      loads.push(await loadAverage());
      finished = 0;
      for (const s of ['passed', 'failed', 'errored', 'canceled'] as const)
        finished += await redis.zcard(keys.jobsByState(s));
    }
    const elapsed = (performance.now() - t0) / 1000;
    const cpu1 = await Promise.all(pids.map(([, p]) => cpuSeconds(p)));
    const kids1 = await Promise.all(workerPids.map(childrenCpuSeconds));
    const box1 = await containersCpuSeconds();
    const self = process.cpuUsage(self0);
    const m1 = await machineCpuSeconds();
    // Proof: every job passed with one attempt, has exactly one final event, and printed its own line once.
    const passed = await redis.zcard(keys.jobsByState('passed'));
    const events = await redis.xrange(keys.events, '-', '+');
    const finals = new Map<string, number>();
    for (const [, f] of events)
      if (['passed', 'failed', 'errored', 'canceled'].includes(f[5] ?? ''))
        finals.set(f[1] ?? '', (finals.get(f[1] ?? '') ?? 0) + 1);
    let oneAttempt = 0;
    let ownLineOnce = 0;
    const waits: number[] = [];
    const runs: number[] = [];
    const launches: number[] = [];
    let warm = 0;
    for (let i = 0; i < JOBS; i++) {
      const id = ids[i] as string;
      const [attempt, createdAt, startedAt, finishedAt] = await redis.hmget(
        keys.job(id),
        'attempt',
        'createdAt',
        'startedAt',
        'finishedAt',
      );
      if (attempt === '1') oneAttempt++;
      waits.push(Date.parse(startedAt ?? '') - Date.parse(createdAt ?? ''));
      runs.push(Date.parse(finishedAt ?? '') - Date.parse(startedAt ?? ''));
      const entries = (await redis.xrange(keys.log(id), '-', '+')) as [string, string[]][];
      const text = entries.map(([, f]) => (f[0] === 't' ? f[1] : '')).join('');
      if (text.split(`job-${i}\n`).length === 2) ownLineOnce++;
      const launch = /\[archway\] (warm|cold) container, launched in (\d+) ms/.exec(text);
      if (launch?.[1] === 'warm') warm++;
      if (launch) launches.push(Number(launch[2]));
    }
    const twice = [...finals.values()].filter((n) => n > 1).length;
    redis.disconnect();
    say();
    say(
      `${JOBS} trivial jobs (\`echo job-N\`) across 4 amd64 workers (2 slots, 2 warm each), submitted through the API in ${(submitted / 1000).toFixed(1)} s: ` +
        `all finished in ${elapsed.toFixed(1)} s = **${(JOBS / elapsed).toFixed(1)} jobs/s**. ` +
        `Passed: ${passed}/${JOBS}; one attempt each: ${oneAttempt}/${JOBS}; exactly one final state change each: ${finals.size - twice}/${JOBS} (${twice} with more); ` +
        `own output line exactly once in its log: ${ownLineOnce}/${JOBS}. Load average during the run: ${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)}.`,
    );
    const w = summarize(waits);
    const r = summarize(runs);
    const l = summarize(launches);
    say();
    say(
      `Per job (ms, p50 / p90 / max): queued -> running ${ms(w.p50)} / ${ms(w.p90)} / ${ms(w.max)}; running -> final state (launch, run, log, destroy before the state is written) ${ms(r.p50)} / ${ms(r.p90)} / ${ms(r.max)}; ` +
        `launch ${ms(l.p50)} / ${ms(l.p90)} / ${ms(l.max)}, ${warm} of ${JOBS} from a warm container.`,
    );
    say();
    say(
      `CPU during the run, ms per job (${elapsed.toFixed(1)} s x 2 cores = ${((2000 * elapsed) / JOBS).toFixed(0)} ms of CPU per job available):`,
    );
    say();
    say('| process | CPU ms per job |');
    say('| --- | --- |');
    let ours = 0;
    pids.forEach(([name], i) => {
      const d = (cpu1[i] as number) - (cpu0[i] as number);
      ours += d;
      say(`| ${name} | ${((1000 * d) / JOBS).toFixed(1)} |`);
    });
    const kids = kids1.reduce((a, b) => a + b, 0) - kids0.reduce((a, b) => a + b, 0);
    say(
      `| the workers' commands (runc, btrfs, nsenter, ...), all 4 | ${((1000 * kids) / JOBS).toFixed(1)} |`,
    );
    const box = box1 - box0;
    say(`| the containers (warm inits, the jobs' shells) | ${((1000 * box) / JOBS).toFixed(1)} |`);
    const client = (self.user + self.system) / 1e6;
    ours += client + kids + box;
    say(`| the benchmark's client (submits, polls) | ${((1000 * client) / JOBS).toFixed(1)} |`);
    const busy = m1.busy - m0.busy;
    say(
      `| everything else on the machine (the kernel's own work, other sessions' processes) | ${((1000 * (busy - ours)) / JOBS).toFixed(1)} |`,
    );
    say(`| machine busy, total | ${((1000 * busy) / JOBS).toFixed(1)} |`);
  } finally {
    await stack.close();
  }
}
process.stdout.write(`${out.join('\n')}\n`);
