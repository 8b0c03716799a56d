/**
 * Launch benchmark of the host runtime: launch -> first output byte, warm and cold, per arch; the
 * cost of the disk limit; and the sustained launch-and-destroy rate with 4 slots.
 *
 *   npm run bench:launch            (as root; ARCHWAY_BENCH_RUNS=50, ARCHWAY_BENCH_SECONDS=60)
 *   ARCHWAY_BENCH_SECCOMP=compare npm run bench:launch
 *                                   the launch table with and without the seccomp filter, side by
 *                                   side (and what compiling the profile costs); nothing else
 *
 * Prints a markdown section; docs/benchmarks.md holds the last one taken on the reference machine.
 */

import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { buildImage, createImageStore } from '../../images/index.ts';
import {
  ARCHES,
  type Arch,
  createLogger,
  deleteSubvolume,
  ensurePool,
  HostConfig,
  ImageNotFoundError,
  limitExclusive,
  parseConfig,
  runCommand,
  snapshotSubvolume,
} from '../../src/index.ts';
import {
  CAPABILITIES,
  type ContainerRuntime,
  compileSeccompProfile,
  createJobLauncher,
  createRuncRuntime,
  createWarmPool,
  type JobLauncher,
  loadSeccompProfile,
  runtimeOptionsFrom,
} from '../../workers/index.ts';
import { createOciSpec } from '../../workers/oci-spec.ts';
import { machine, ms, summarize } from './stats.ts';

const env: Record<string, string | undefined> = {
  ARCHWAY_POOL_PATH: '/var/lib/archway-bench',
  ARCHWAY_RUN_DIR: '/run/archway-bench',
  ARCHWAY_CGROUP_PARENT: 'archway-bench',
  ARCHWAY_LOG_LEVEL: 'warn',
  ...process.env,
};
const RUNS = Number(env.ARCHWAY_BENCH_RUNS ?? 50);
const SECONDS = Number(env.ARCHWAY_BENCH_SECONDS ?? 60);
const ARCH_LIST = (env.ARCHWAY_BENCH_ARCHES?.split(',') ?? [...ARCHES]) as Arch[];
const LIMITS = { cpus: 1, memoryMiB: 256, pids: 256, diskMiB: 1024 };
const COMPARE_SECCOMP = env.ARCHWAY_BENCH_SECCOMP === 'compare';

const config = parseConfig(HostConfig, env);
const logger = createLogger({ name: 'bench', level: config.ARCHWAY_LOG_LEVEL });
await ensurePool({ path: config.ARCHWAY_POOL_PATH, loopSizeGiB: 16, logger });
const store = createImageStore({ poolPath: config.ARCHWAY_POOL_PATH });

async function runtimeFor(arch: Arch, seccomp = true) {
  try {
    await store.resolve('busybox', arch);
  } catch (e) {
    if (!(e instanceof ImageNotFoundError)) throw e;
    await buildImage('busybox', arch, {
      store,
      cacheDir: join(config.ARCHWAY_POOL_PATH, 'cache'),
      idBase: config.ARCHWAY_UID_BASE,
      mirror: config.ARCHWAY_DEBIAN_MIRROR,
      logger,
    });
  }
  const runtime = await createRuncRuntime({
    ...runtimeOptionsFrom(config, arch, logger),
    ...(seccomp ? {} : { seccompProfile: false as const }),
  });
  await runtime.reap({});
  return runtime;
}

/** Milliseconds from launch() to the first byte of the job's output. */
async function firstByte(launcher: JobLauncher, jobId: string, expectWarm: boolean): Promise<number> {
  const t0 = performance.now();
  const job = await launcher.launch({ jobId, image: 'busybox', argv: ['echo', 'x'], limits: LIMITS });
  if (job.warm !== expectWarm)
    throw new Error(`job ${jobId} was ${job.warm ? 'warm' : 'cold'}, expected the other`);
  const first = await new Promise<number>((resolve) =>
    job.output.once('data', () => resolve(performance.now() - t0)),
  );
  job.output.resume();
  const r = await job.result;
  if (r.exitCode !== 0) throw new Error(`job ${jobId} exited ${r.exitCode}`);
  return first;
}

const out: string[] = [];
const say = (line = '') => {
  out.push(line);
  process.stderr.write(`${line}\n`);
};

say(`### Launch (host runtime), ${new Date().toISOString().slice(0, 10)}`);
say();
say(`Machine: ${await machine()}. ${RUNS} launches per row; job = \`echo x\` in busybox; milliseconds.`);
say();
say(`| arch | start |${COMPARE_SECCOMP ? ' seccomp |' : ''} min | p50 | p90 | p99 | max |`);
say(`| --- | --- |${COMPARE_SECCOMP ? ' --- |' : ''} --- | --- | --- | --- | --- |`);
// With ARCHWAY_BENCH_SECCOMP=compare the two variants (filter on, off) run side by side and take
// turns sample by sample, so that a change in the host's load hits both alike.
const VARIANTS = COMPARE_SECCOMP ? [true, false] : [true];
for (const arch of ARCH_LIST) {
  const runtimes: ContainerRuntime[] = [];
  for (const seccomp of VARIANTS) runtimes.push(await runtimeFor(arch, seccomp));
  const colds = runtimes.map((runtime) => createJobLauncher({ runtime, images: store, logger }));
  const coldSamples = VARIANTS.map(() => [] as number[]);
  for (const [k, cold] of colds.entries()) await firstByte(cold, `bench-warmup-${arch}-${k}`, false);
  for (let i = 0; i < RUNS; i++)
    for (const [k, cold] of colds.entries())
      coldSamples[k]?.push(await firstByte(cold, `bench-cold-${arch}-${k}-${i}`, false));
  for (const cold of colds) await cold.close();

  const warmPools = runtimes.map((runtime) =>
    createWarmPool({ runtime, images: store, targets: { busybox: 2 }, limits: LIMITS, logger }),
  );
  const warms = warmPools.map((warmPool, k) =>
    createJobLauncher({ runtime: runtimes[k] as ContainerRuntime, images: store, logger, warmPool }),
  );
  for (const pool of warmPools) pool.start();
  const warmSamples = VARIANTS.map(() => [] as number[]);
  for (let i = 0; i < RUNS; i++) {
    for (const [k, warm] of warms.entries()) {
      // Measure the job's path only: every pool is refilled and the last container destroyed first.
      await Promise.all(warmPools.map((pool) => pool.filled()));
      warmSamples[k]?.push(await firstByte(warm, `bench-warm-${arch}-${k}-${i}`, true));
    }
  }
  for (const warm of warms) await warm.close();
  for (const [k, seccomp] of VARIANTS.entries()) {
    for (const [start, samples] of [
      ['warm', warmSamples[k] ?? []],
      ['cold', coldSamples[k] ?? []],
    ] as const) {
      const s = summarize(samples);
      say(
        `| ${arch}${runtimes[k]?.emulated ? ' (emulated)' : ''} | ${start} |${COMPARE_SECCOMP ? ` ${seccomp ? 'on' : 'off'} |` : ''} ${ms(s.min)} | ${ms(s.p50)} | ${ms(s.p90)} | ${ms(s.p99)} | ${ms(s.max)} |`,
      );
    }
  }
}

if (COMPARE_SECCOMP) {
  // Once per worker process: reading the profile and compiling it for this host.
  const samples: number[] = [];
  let bytes = 0;
  for (let i = 0; i < RUNS; i++) {
    const t = performance.now();
    const profile = await loadSeccompProfile(config.ARCHWAY_SECCOMP_PROFILE);
    const filter = compileSeccompProfile(profile, {
      hostArch: 'amd64',
      capabilities: CAPABILITIES,
      kernel: '6.1',
    });
    samples.push(performance.now() - t);
    bytes = JSON.stringify(filter).length;
  }
  const c = summarize(samples);
  say();
  say(
    `Profile: reading and compiling ${config.ARCHWAY_SECCOMP_PROFILE} takes p50 ${ms(c.p50)} ms (max ${ms(c.max)}), once per worker process; the filter adds ${(bytes / 1024).toFixed(1)} KiB to each container's config.json.`,
  );

  // Where a filter's cost is: the CPU time of one `runc run` of /bin/true (runc and its init, which
  // compiles the filter with libseccomp), by filter. CPU time, since the wall clock follows the load.
  const image = await store.resolve('busybox', 'amd64');
  const root = join(config.ARCHWAY_POOL_PATH, 'jobs', 'bench-seccomp-root');
  await snapshotSubvolume(image.path, root);
  await mkdir(join(root, '.archway'), { recursive: true });
  await writeFile(join(root, '.archway', 'init'), '');
  const full = compileSeccompProfile(await loadSeccompProfile(config.ARCHWAY_SECCOMP_PROFILE), {
    hostArch: 'amd64',
    capabilities: CAPABILITIES,
    kernel: '6.1',
  });
  const variants = {
    none: undefined,
    'x86_64 only': { ...full, architectures: ['SCMP_ARCH_X86_64'] },
    'x86_64 + x86 (archway)': full,
    "x86_64 + x86 + x32 (Docker's list)": {
      ...full,
      architectures: [...full.architectures, 'SCMP_ARCH_X32'],
    },
  };
  const stateRoot = join(config.ARCHWAY_RUN_DIR, 'bench-runc');
  const cpu: Record<string, number[]> = {};
  for (const [name, seccomp] of Object.entries(variants)) {
    const bundle = join(config.ARCHWAY_POOL_PATH, 'bundles', `bench-seccomp-${Object.keys(cpu).length}`);
    await mkdir(bundle, { recursive: true });
    const spec = createOciSpec({
      rootfs: root,
      hostname: 'bench',
      idBase: config.ARCHWAY_UID_BASE,
      idSize: config.ARCHWAY_UID_SIZE,
      limits: LIMITS,
      cgroupsPath: `/${config.ARCHWAY_CGROUP_PARENT}/bench-seccomp`,
      initPath: config.ARCHWAY_INIT,
      network: 'none',
      seccomp,
    });
    await writeFile(
      join(bundle, 'config.json'),
      JSON.stringify({ ...spec, process: { ...spec.process, args: ['/bin/true'] } }),
    );
    cpu[name] = [];
  }
  for (let i = 0; i < RUNS; i++) {
    for (const [n, name] of Object.keys(cpu).entries()) {
      const bundle = join(config.ARCHWAY_POOL_PATH, 'bundles', `bench-seccomp-${n}`);
      // bash's `times`: the user and system time of its children (runc and what runc waited for).
      const out = await runCommand('bash', [
        '-c',
        `runc --root ${stateRoot} run --bundle ${bundle} bench-seccomp-${n}-${i} >/dev/null 2>&1; times`,
      ]);
      const [user = 0, sys = 0] = [...(out.trim().split('\n')[1] ?? '').matchAll(/(\d+)m([\d.]+)s/g)].map(
        (m) => Number(m[1]) * 60_000 + Number(m[2]) * 1000,
      );
      cpu[name]?.push(user + sys);
    }
  }
  for (const n of Object.keys(cpu).keys())
    await rm(join(config.ARCHWAY_POOL_PATH, 'bundles', `bench-seccomp-${n}`), {
      recursive: true,
      force: true,
    });
  await deleteSubvolume(root);
  say();
  say(
    `CPU of one \`runc run\` of /bin/true by filter, ms (user + system, 10 ms ticks averaged over ${RUNS} runs; interleaved):`,
  );
  say();
  say('| filter | mean | p50 | p90 |');
  say('| --- | --- | --- | --- |');
  for (const [name, samples] of Object.entries(cpu)) {
    const s = summarize(samples);
    say(
      `| ${name} | ${ms(samples.reduce((a, b) => a + b, 0) / samples.length)} | ${ms(s.p50)} | ${ms(s.p90)} |`,
    );
  }
}

// What the disk limit costs a cold launch: the qgroup limit call after the snapshot.
if (!COMPARE_SECCOMP) {
  const runtime = await runtimeFor('amd64');
  const image = await store.resolve('busybox', runtime.arch);
  const plain: number[] = [];
  const limited: number[] = [];
  const scratch = join(config.ARCHWAY_POOL_PATH, 'jobs', 'bench-qgroup');
  for (let i = 0; i < RUNS; i++) {
    let t = performance.now();
    await snapshotSubvolume(image.path, scratch);
    plain.push(performance.now() - t);
    await deleteSubvolume(scratch);
    t = performance.now();
    await snapshotSubvolume(image.path, scratch);
    await limitExclusive(scratch, 1024 ** 3);
    limited.push(performance.now() - t);
    await deleteSubvolume(scratch);
  }
  const p = summarize(plain);
  const l = summarize(limited);
  say();
  say(
    `Disk limit: snapshot alone p50 ${ms(p.p50)} ms (p99 ${ms(p.p99)}); snapshot + qgroup limit p50 ${ms(l.p50)} ms (p99 ${ms(l.p99)}): the limit adds ~${ms(l.p50 - p.p50)} ms to a cold launch and nothing to a warm one (set when the warm container is made).`,
  );
}

// Sustained launch-and-destroy rate: 4 slots, each launching `true` back to back, warm pool of 4.
if (!COMPARE_SECCOMP) {
  const runtime = await runtimeFor('amd64');
  const warmPool = createWarmPool({
    runtime,
    images: store,
    targets: { busybox: 4 },
    limits: LIMITS,
    logger,
  });
  const launcher = createJobLauncher({ runtime, images: store, logger, warmPool });
  warmPool.start();
  await warmPool.filled();
  let done = 0;
  let warmCount = 0;
  const until = performance.now() + SECONDS * 1000;
  const slot = async (n: number) => {
    for (let i = 0; performance.now() < until; i++) {
      const job = await launcher.launch({
        jobId: `rate-${n}-${i}`,
        image: 'busybox',
        argv: ['true'],
        limits: LIMITS,
      });
      if (job.warm) warmCount++;
      job.output.resume();
      const r = await job.result;
      if (r.exitCode !== 0) throw new Error(`rate job exited ${r.exitCode}`);
      done++;
    }
  };
  const t0 = performance.now();
  await Promise.all([0, 1, 2, 3].map(slot));
  const elapsed = (performance.now() - t0) / 1000;
  await launcher.close();
  say();
  say(
    `Sustained rate (amd64, 4 slots, ${SECONDS} s): ${done} jobs, ${(done / elapsed).toFixed(1)} jobs/s launched, run and destroyed (${warmCount} got a warm container, ${done - warmCount} started cold).`,
  );
}
process.stdout.write(`${out.join('\n')}\n`);
