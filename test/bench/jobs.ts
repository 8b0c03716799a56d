/**
 * End-to-end benchmark through the API, with real processes (redis-server, `archway api`,
 * `archway worker`): submit -> first line of the job's output at a following client, per arch;
 * log throughput of one job writing 200 MB to a following client (and the worker's peak RSS);
 * 2,000 trivial jobs across 4 workers, checking that none was lost or run twice.
 *
 *   npm run bench:jobs      (as root; ARCHWAY_BENCH_RUNS=30 ARCHWAY_BENCH_JOBS=2000 ARCHWAY_BENCH_LOG_MB=200,
 *                            ARCHWAY_BENCH_ONLY=latency|log|jobs for one part)
 */
import { performance } from 'node:perf_hooks';
import { ARCHES, createKeys, createRedis } from '../../src/core/index.ts';
import { peakRssMiB, startStack, waitForNodes } from './stack.ts';
import { machine, ms, summarize } from './stats.ts';

const RUNS = Number(process.env.ARCHWAY_BENCH_RUNS ?? 30);
const JOBS = Number(process.env.ARCHWAY_BENCH_JOBS ?? 2000);
const LOG_MB = Number(process.env.ARCHWAY_BENCH_LOG_MB ?? 200);
/** Run one part only: latency, log or jobs. */
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

// 2. Log throughput: one job writing LOG_MB to a following client.
if (part('log')) {
  const stack = await startStack();
  try {
    const worker = stack.addWorker('amd64', {
      slots: 1,
      warm: 0,
      env: { ARCHWAY_LOG_LIMIT_MIB: String(LOG_MB + 16) },
    });
    await waitForNodes(stack, 'amd64', 1);
    const bytes = LOG_MB * 1_000_000;
    const res = await stack.api('/v1/jobs', {
      method: 'POST',
      body: JSON.stringify({
        arch: 'amd64',
        image: 'busybox',
        script: `yes 'archway log throughput benchmark line of output' | head -c ${bytes}`,
      }),
    });
    const { job } = (await res.json()) as { job: { id: string } };
    const log = await stack.api(`/v1/jobs/${job.id}/log?follow=1`);
    const reader = (log.body as ReadableStream<Uint8Array>).getReader();
    let received = 0;
    let t0 = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      if (!t0) t0 = performance.now();
      received += value.byteLength;
    }
    const seconds = (performance.now() - t0) / 1000;
    const rss = await peakRssMiB(worker.pid as number);
    const final = (await (await stack.api(`/v1/jobs/${job.id}`)).json()) as {
      state: string;
      logBytes: number;
    };
    say();
    say(
      `Log throughput: one job writing ${LOG_MB} MB, read by a client following the log: ${(received / 1e6).toFixed(0)} MB in ${seconds.toFixed(1)} s = ` +
        `**${(received / 1e6 / seconds).toFixed(0)} MB/s**; job ${final.state}, ${final.logBytes} bytes logged; the worker's peak RSS ${rss.toFixed(0)} MiB.`,
    );
  } finally {
    await stack.close();
  }
}

// 3. JOBS trivial jobs across 4 workers: throughput, none lost, none run twice.
if (part('jobs')) {
  const stack = await startStack();
  try {
    for (let i = 0; i < 4; i++) stack.addWorker('amd64', { slots: 2, warm: 2 });
    await waitForNodes(stack, 'amd64', 4);
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
    // createRedis: ARCHWAY_TEST_REDIS=cluster runs the stack on a 3-primary Redis Cluster.
    const redis = createRedis({ url: stack.redis.url, name: 'bench' });
    const keys = createKeys(stack.prefix);
    let finished = 0;
    while (finished < JOBS) {
      await new Promise((r) => setTimeout(r, 500));
      finished = 0;
      for (const s of ['passed', 'failed', 'errored', 'canceled'] as const)
        finished += await redis.zcard(keys.jobsByState(s));
    }
    const elapsed = (performance.now() - t0) / 1000;
    // Proof: every job passed with one attempt, has exactly one final event, and printed its own line once.
    const passed = await redis.zcard(keys.jobsByState('passed'));
    const events = await redis.xrange(keys.events, '-', '+');
    const finals = new Map<string, number>();
    for (const [, f] of events)
      if (['passed', 'failed', 'errored', 'canceled'].includes(f[5] ?? ''))
        finals.set(f[1] ?? '', (finals.get(f[1] ?? '') ?? 0) + 1);
    let oneAttempt = 0;
    let ownLineOnce = 0;
    for (let i = 0; i < JOBS; i++) {
      const id = ids[i] as string;
      if ((await redis.hget(keys.job(id), 'attempt')) === '1') oneAttempt++;
      const entries = (await redis.xrange(keys.log(id), '-', '+')) as [string, string[]][];
      const text = entries.map(([, f]) => (f[0] === 't' ? f[1] : '')).join('');
      if (text.split(`job-${i}\n`).length === 2) ownLineOnce++;
    }
    const twice = [...finals.values()].filter((n) => n > 1).length;
    redis.disconnect();
    say();
    say(
      `${JOBS} trivial jobs (\`echo job-N\`) across 4 amd64 workers (2 slots, 2 warm each), submitted through the API in ${(submitted / 1000).toFixed(1)} s: ` +
        `all finished in ${elapsed.toFixed(1)} s = **${(JOBS / elapsed).toFixed(1)} jobs/s**. ` +
        `Passed: ${passed}/${JOBS}; one attempt each: ${oneAttempt}/${JOBS}; exactly one final state change each: ${finals.size - twice}/${JOBS} (${twice} with more); ` +
        `own output line exactly once in its log: ${ownLineOnce}/${JOBS}.`,
    );
  } finally {
    await stack.close();
  }
}
process.stdout.write(`${out.join('\n')}\n`);
