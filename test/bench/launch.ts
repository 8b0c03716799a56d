/**
 * Launch benchmark of the host runtime: launch -> first output byte, warm and cold, per arch; the
 * cost of the disk limit; what the per-container uid range costs (the range's image copy, the user
 * namespace, the ucount limits, and a cold launch on a range that has no copy yet); and the
 * sustained launch-and-destroy rate with 4 slots.
 *
 *   npm run bench:launch            (as root; ARCHWAY_BENCH_RUNS=50, ARCHWAY_BENCH_SECONDS=60)
 *   ARCHWAY_BENCH_SECCOMP=compare npm run bench:launch
 *                                   the launch table with and without the seccomp filter, side by
 *                                   side (and what compiling the profile costs); nothing else
 *
 *   ARCHWAY_BENCH_IMAGE=debian-bookworm ARCHWAY_BENCH_ARCHES=amd64 npm run bench:launch
 *                                   the launch table of another image (built beforehand with
 *                                   `bin/archway images build NAME --arch A` into the same pool);
 *                                   nothing else
 *
 * Prints a markdown section; docs/benchmarks.md holds the last one taken on the reference machine.
 */

import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { buildImage, createImageStore, imageForRange, removeRangeCopies } from '../../images/index.ts';
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
  poolLayout,
  runCommand,
  setReadonly,
  snapshotSubvolume,
} from '../../src/core/index.ts';
import {
  CAPABILITIES,
  type ContainerRuntime,
  compileSeccompProfile,
  createJobLauncher,
  createRuncRuntime,
  createUserNamespace,
  createWarmPool,
  idRangeOf,
  type JobLauncher,
  limitUcounts,
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
const IMAGE = env.ARCHWAY_BENCH_IMAGE ?? 'busybox';
/** Only the launch table: the other sections measure busybox-specific costs. */
const LAUNCH_ONLY = COMPARE_SECCOMP || IMAGE !== 'busybox';

const config = parseConfig(HostConfig, env);
const logger = createLogger({ name: 'bench', level: config.ARCHWAY_LOG_LEVEL });
await ensurePool({ path: config.ARCHWAY_POOL_PATH, loopSizeGiB: 16, logger });
const store = createImageStore({ poolPath: config.ARCHWAY_POOL_PATH });

async function runtimeFor(arch: Arch, seccomp = true) {
  try {
    await store.resolve(IMAGE, arch);
  } catch (e) {
    if (!(e instanceof ImageNotFoundError) || IMAGE !== 'busybox') throw e;
    await buildImage('busybox', arch, {
      store,
      cacheDir: poolLayout(config.ARCHWAY_POOL_PATH).cache,
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
  const job = await launcher.launch({ jobId, image: IMAGE, argv: ['echo', 'x'], limits: LIMITS });
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
say(`Machine: ${await machine()}. ${RUNS} launches per row; job = \`echo x\` in ${IMAGE}; milliseconds.`);
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
    createWarmPool({ runtime, images: store, targets: { [IMAGE]: 2 }, limits: LIMITS, logger }),
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
    const bundle = join(
      poolLayout(config.ARCHWAY_POOL_PATH).bundles,
      `bench-seccomp-${Object.keys(cpu).length}`,
    );
    await mkdir(bundle, { recursive: true });
    const spec = createOciSpec({
      rootfs: root,
      hostname: 'bench',
      idBase: config.ARCHWAY_UID_BASE,
      idSize: config.ARCHWAY_UID_SIZE,
      limits: LIMITS,
      cgroupsPath: `/${config.ARCHWAY_CGROUP_PARENT}/bench-seccomp`,
      initPath: config.ARCHWAY_INIT,
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
      const bundle = join(poolLayout(config.ARCHWAY_POOL_PATH).bundles, `bench-seccomp-${n}`);
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
    await rm(join(poolLayout(config.ARCHWAY_POOL_PATH).bundles, `bench-seccomp-${n}`), {
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
if (!LAUNCH_ONLY) {
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

// What the uid range per container costs. Steady state: a range's copy of an image version
// exists after its first use, so a launch pays only the user namespace and the ucount limits.
if (!LAUNCH_ONLY) {
  say();
  say('uid range per container, milliseconds:');
  say();
  say('| step | arch | min | p50 | p90 | p99 | max |');
  say('| --- | --- | --- | --- | --- | --- | --- |');
  const row = (step: string, arch: string, samples: number[]) => {
    const s = summarize(samples);
    say(`| ${step} | ${arch} | ${ms(s.min)} | ${ms(s.p50)} | ${ms(s.p90)} | ${ms(s.p99)} | ${ms(s.max)} |`);
  };
  const layout = {
    base: config.ARCHWAY_UID_BASE,
    size: config.ARCHWAY_UID_SIZE,
    count: config.ARCHWAY_UID_RANGES,
  };
  const opts = runtimeOptionsFrom(config, 'amd64', logger);
  for (const arch of ARCH_LIST.filter((a) => a === 'amd64' || a === 'arm64')) {
    const runtime: ContainerRuntime = await runtimeFor(arch);
    const image = await store.resolve('busybox', arch);
    const copy: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      await removeRangeCopies(image.path);
      const t = performance.now();
      await imageForRange(image, idRangeOf(layout, 1 + (i % (layout.count - 1))));
      copy.push(performance.now() - t);
    }
    row(
      `range copy of busybox made (once per version and range; ${await fileCount(image.path)} files)`,
      arch,
      copy,
    );
    // A cold launch on a range with no copy yet: range 0 is held by a container, the copies are removed first.
    const holder = await runtime.prepare(image, LIMITS, {});
    const cold = createJobLauncher({ runtime, images: store, logger });
    const fresh: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      await removeRangeCopies(image.path);
      fresh.push(await firstByte(cold, `bench-fresh-${arch}-${i}`, false));
    }
    await cold.close();
    row('cold launch, range copy made on the way (worst case)', arch, fresh);
    await runtime.destroy(holder, {});
  }
  // A Debian-sized tree (20,000 files in 200 directories besides busybox's): the chown pass is
  // what grows with the image; this is what a build image's first use of a range costs.
  {
    const image = await store.resolve('busybox', 'amd64');
    const big = join(config.ARCHWAY_POOL_PATH, 'jobs', 'bench-bigtree');
    await snapshotSubvolume(image.path, big);
    for (let d = 0; d < 200; d++) {
      const dir = join(big, 'usr/share/bench', String(d));
      await mkdir(dir, { recursive: true });
      await Promise.all(Array.from({ length: 100 }, (_, f) => writeFile(join(dir, String(f)), 'x')));
    }
    await runCommand('chown', [
      '-R',
      `${config.ARCHWAY_UID_BASE}:${config.ARCHWAY_UID_BASE}`,
      join(big, 'usr/share/bench'),
    ]);
    await setReadonly(big, true);
    const bigImage = { path: big };
    const samples: number[] = [];
    for (let i = 0; i < Math.min(RUNS, 5); i++) {
      await removeRangeCopies(big);
      const t = performance.now();
      await imageForRange(bigImage, idRangeOf(layout, 1));
      samples.push(performance.now() - t);
    }
    row(`range copy of a tree of ${await fileCount(big)} files`, 'any', samples);
    await removeRangeCopies(big);
    await deleteSubvolume(big);
  }
  // A real Debian image, when the pool holds one (ARCHWAY_TEST_DEBIAN=1 integration runs build it).
  const debian = await store.resolve('debian-bookworm-build', 'amd64').catch(() => undefined);
  if (debian) {
    const samples: number[] = [];
    for (let i = 0; i < Math.min(RUNS, 5); i++) {
      await removeRangeCopies(debian.path);
      const t = performance.now();
      await imageForRange(debian, idRangeOf(layout, 1));
      samples.push(performance.now() - t);
    }
    await removeRangeCopies(debian.path);
    row(`range copy of debian-bookworm-build (${await fileCount(debian.path)} files)`, 'amd64', samples);
  }
  // The alternative to range copies: an idmapped mount of the version per container (kernel
  // mount_setattr(MOUNT_ATTR_IDMAP); runc 1.1.5 cannot make one, so a helper of our own would,
  // test/bench/idmap-mount.c). What it would cost each container: the mount, and its umount.
  {
    const helper = join(config.ARCHWAY_POOL_PATH, 'jobs', 'bench-idmap-mount');
    await runCommand('gcc', ['-static', '-O2', '-o', helper, join(import.meta.dirname, 'idmap-mount.c')]);
    const range = idRangeOf(layout, 1);
    // A namespace that maps the stored ids (range 0) to range 1's: the mount's idmapping.
    const mapper = spawn('unshare', ['--user', '--', 'cat'], { stdio: ['pipe', 'ignore', 'ignore'] });
    const nsPath = `/proc/${mapper.pid}/ns/user`;
    const mine = await readlink('/proc/self/ns/user');
    while ((await readlink(nsPath).catch(() => mine)) === mine) await new Promise((r) => setTimeout(r, 1));
    const map = `${layout.base} ${range.hostId} ${layout.size}\n`;
    await writeFile(`/proc/${mapper.pid}/uid_map`, map);
    await writeFile(`/proc/${mapper.pid}/gid_map`, map);
    const image = await store.resolve('busybox', 'amd64');
    const snap = join(config.ARCHWAY_POOL_PATH, 'jobs', 'bench-idmap-snap');
    const target = join(config.ARCHWAY_POOL_PATH, 'jobs', 'bench-idmap-target');
    await snapshotSubvolume(image.path, snap);
    await mkdir(target, { recursive: true });
    const mounts: number[] = [];
    const umounts: number[] = [];
    try {
      for (let i = 0; i < RUNS; i++) {
        let t = performance.now();
        await runCommand(helper, [snap, target, nsPath]);
        mounts.push(performance.now() - t);
        if (i === 0 && (await stat(join(target, 'bin/busybox'))).uid !== range.hostId)
          throw new Error('the idmapped mount does not show range 1 as the owner');
        t = performance.now();
        await runCommand('umount', [target]);
        umounts.push(performance.now() - t);
      }
    } finally {
      mapper.stdin?.destroy();
      mapper.kill('SIGKILL');
      await runCommand('umount', [target]).catch(() => undefined);
      await rm(target, { recursive: true, force: true });
      await rm(helper, { force: true });
      await deleteSubvolume(snap);
    }
    row(
      'idmapped mount of a snapshot instead (helper exec + open_tree + mount_setattr + move_mount; not used)',
      'any',
      mounts,
    );
    row('its umount at destroy (not used)', 'any', umounts);
  }
  const userns: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t = performance.now();
    const ns = await createUserNamespace(idRangeOf(layout, 1).hostId, layout.size, 10_000);
    userns.push(performance.now() - t);
    ns.close();
  }
  row('user namespace made by the range root uid (every prepare)', 'any', userns);
  const runtime = await runtimeFor('amd64');
  const c = await runtime.prepare(await store.resolve('busybox', 'amd64'), LIMITS, {});
  const initPid = Number(
    (await readFile(join(poolLayout(config.ARCHWAY_POOL_PATH).bundles, c.id, 'init.pid'), 'utf8')).trim(),
  );
  const ucounts: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t = performance.now();
    await limitUcounts(initPid, opts.ucounts, 10_000);
    ucounts.push(performance.now() - t);
  }
  await runtime.destroy(c, {});
  row('user.max_* limits set through nsenter (every prepare)', 'any', ucounts);
}

// Sustained launch-and-destroy rate: 4 slots, each launching `true` back to back, warm pool of 4.
if (!LAUNCH_ONLY) {
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

async function fileCount(root: string): Promise<number> {
  return (await readdir(root, { recursive: true })).length + 1;
}
