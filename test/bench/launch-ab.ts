/**
 * Warm launch of two checkouts of archway, interleaved in one process (A, B, B, A, A, B, ...), so
 * that a loaded host's drift falls on both alike: what `npm run bench:launch` run once per checkout
 * cannot tell apart on a shared machine. Each side has its own runtime and warm pool of 1 on the
 * same pool; a launch waits until its side's pool is full and the host has settled for 300 ms.
 * Measured: launch() -> first output byte, and launch() -> result, of `echo x` in busybox.
 *
 *   ARCHWAY_BENCH_A=/path/to/checkout-a ARCHWAY_BENCH_B=/path/to/checkout-b \
 *     npx tsx test/bench/launch-ab.ts   (as root; ARCHWAY_BENCH_ARCH=amd64, ARCHWAY_BENCH_RUNS=40)
 *
 * The pool and runtime settings come from the environment as for a worker (ARCHWAY_POOL_PATH, ...);
 * both checkouts must understand the same ones.
 */

import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { machine, ms, summarize } from './stats.ts';

const env = process.env;
const RUNS = Number(env.ARCHWAY_BENCH_RUNS ?? 40);
const ARCH = env.ARCHWAY_BENCH_ARCH ?? 'amd64';
const LIMITS = { cpus: 1, memoryMiB: 256, pids: 256, diskMiB: 1024 };
const dirs = { A: env.ARCHWAY_BENCH_A, B: env.ARCHWAY_BENCH_B };
if (!dirs.A || !dirs.B) throw new Error('set ARCHWAY_BENCH_A and ARCHWAY_BENCH_B to the two checkouts');

interface Side {
  launch(jobId: string): Promise<{ first: number; total: number; warm: boolean }>;
  close(): Promise<void>;
}

/** One checkout's runtime, warm pool and launcher, loaded from its own files. */
async function side(dir: string): Promise<Side> {
  const core = await import(resolve(dir, 'src/core/index.ts'));
  const workers = await import(resolve(dir, 'workers/index.ts'));
  const images = await import(resolve(dir, 'images/index.ts'));
  const config = core.parseConfig(core.HostConfig, env);
  const logger = core.createLogger({ name: 'bench-ab', level: 'warn' });
  const store = images.createImageStore({ poolPath: config.ARCHWAY_POOL_PATH });
  const runtime = await workers.createRuncRuntime(workers.runtimeOptionsFrom(config, ARCH, logger));
  const warmPool = workers.createWarmPool({
    runtime,
    images: store,
    targets: { busybox: 1 },
    limits: LIMITS,
    logger,
  });
  const launcher = workers.createJobLauncher({ runtime, images: store, logger, warmPool });
  warmPool.start();
  return {
    async launch(jobId) {
      await warmPool.filled();
      await new Promise((r) => setTimeout(r, 300));
      const t0 = performance.now();
      const job = await launcher.launch({ jobId, image: 'busybox', argv: ['echo', 'x'], limits: LIMITS });
      const first = await new Promise<number>((r) =>
        job.output.once('data', () => r(performance.now() - t0)),
      );
      job.output.resume();
      const result = await job.result;
      if (result.exitCode !== 0) throw new Error(`job ${jobId} exited ${result.exitCode}`);
      return { first, total: performance.now() - t0, warm: job.warm };
    },
    close: () => launcher.close(),
  };
}

const sides = { A: await side(dirs.A), B: await side(dirs.B) };
const times = {
  A: { first: [] as number[], total: [] as number[] },
  B: { first: [] as number[], total: [] as number[] },
};
// One round of warm-up, then RUNS rounds; the order within a round alternates.
for (let i = 0; i <= RUNS; i++) {
  for (const k of i % 2 ? (['A', 'B'] as const) : (['B', 'A'] as const)) {
    const r = await sides[k].launch(`ab-${k.toLowerCase()}-${i}`);
    if (i === 0 || !r.warm) continue;
    times[k].first.push(r.first);
    times[k].total.push(r.total);
  }
}
await Promise.all([sides.A.close(), sides.B.close()]);

const say = (line = '') => process.stdout.write(`${line}\n`);
say(`### Warm launch, A/B interleaved, ${ARCH}, ${new Date().toISOString().slice(0, 10)}`);
say();
say(`${await machine()} ${RUNS} launches per side; job = \`echo x\` in busybox; milliseconds.`);
say(`A = ${dirs.A}, B = ${dirs.B}.`);
say();
say('| side | measure | min | p50 | p90 | p99 | max |');
say('| --- | --- | --- | --- | --- | --- | --- |');
for (const k of ['A', 'B'] as const) {
  for (const [what, values] of [
    ['first output byte', times[k].first],
    ['result', times[k].total],
  ] as const) {
    const s = summarize(values);
    say(`| ${k} | ${what} | ${ms(s.min)} | ${ms(s.p50)} | ${ms(s.p90)} | ${ms(s.p99)} | ${ms(s.max)} |`);
  }
}
process.exit(0);
