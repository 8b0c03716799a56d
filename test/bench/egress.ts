/**
 * Egress benchmark: what a job's network costs and what the package cache saves.
 *
 *   npm run bench:egress     (as root; the Debian images must be built in the pool:
 *                             bin/archway images build debian-bookworm --arch amd64,s390x)
 *
 * 1. Launch to first output byte with `network: egress` vs `none`, warm and cold, per arch
 *    (ARCHWAY_BENCH_ARCHES, default amd64,arm64; ARCHWAY_BENCH_RUNS, default 20).
 * 2. `apt-get install -y cmake libssl-dev zlib1g-dev` in two successive egress jobs, the cache
 *    emptied before the first (ARCHWAY_BENCH_APT_ARCHES, default amd64,s390x): the install
 *    step's seconds, and the .deb files the cache fetched from the mirror during each job.
 * 3. Download throughput of a 21 MB .deb from the mirror: from a job (egress, through NAT) vs
 *    the same download on the host (ARCHWAY_BENCH_DOWNLOADS, default 5).
 *
 * Prints a markdown section for docs/benchmarks.md.
 */

import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createImageStore, ensureImage } from '../../images/index.ts';
import {
  type Arch,
  createLogger,
  ensurePool,
  HostConfig,
  type NetworkMode,
  parseConfig,
  poolLayout,
  runCommand,
} from '../../src/core/index.ts';
import {
  createJobLauncher,
  createRuncRuntime,
  createWarmPool,
  type JobLauncher,
  runtimeOptionsFrom,
} from '../../workers/index.ts';
import { machine, ms, summarize } from './stats.ts';

const env: Record<string, string | undefined> = {
  ARCHWAY_POOL_PATH: '/var/lib/archway-bench',
  ARCHWAY_RUN_DIR: '/run/archway-bench',
  ARCHWAY_CGROUP_PARENT: 'archway-bench',
  ARCHWAY_LOG_LEVEL: 'warn',
  ...process.env,
};
const RUNS = Number(env.ARCHWAY_BENCH_RUNS ?? 20);
const ARCH_LIST = (env.ARCHWAY_BENCH_ARCHES ?? 'amd64,arm64').split(',') as Arch[];
const APT_ARCHES = (env.ARCHWAY_BENCH_APT_ARCHES ?? 'amd64,s390x').split(',').filter(Boolean) as Arch[];
const DOWNLOADS = Number(env.ARCHWAY_BENCH_DOWNLOADS ?? 5);
const PACKAGES = 'cmake libssl-dev zlib1g-dev';
const DEB = 'http://deb.debian.org/debian/pool/main/l/llvm-toolchain-14/libllvm14_14.0.6-12_amd64.deb';
const LIMITS = { cpus: 2, memoryMiB: 1024, pids: 512, diskMiB: 4096 };

const config = parseConfig(HostConfig, env);
const logger = createLogger({ name: 'bench', level: config.ARCHWAY_LOG_LEVEL });
await ensurePool({ path: config.ARCHWAY_POOL_PATH, loopSizeGiB: 24, logger });
const store = createImageStore({ poolPath: config.ARCHWAY_POOL_PATH });
const out: string[] = [];
const say = (line = '') => {
  out.push(line);
  console.error(line);
};

async function runtimeFor(arch: Arch) {
  await ensureImage('busybox', arch, {
    store,
    cacheDir: poolLayout(config.ARCHWAY_POOL_PATH).cache,
    idBase: config.ARCHWAY_UID_BASE,
    mirror: config.ARCHWAY_DEBIAN_MIRROR,
    logger,
  });
  const runtime = await createRuncRuntime(runtimeOptionsFrom(config, arch, logger));
  await runtime.reap({});
  return runtime;
}

async function firstByte(
  launcher: JobLauncher,
  jobId: string,
  network: NetworkMode,
  expectWarm: boolean,
): Promise<number> {
  const t0 = performance.now();
  const job = await launcher.launch({
    jobId,
    image: 'busybox',
    argv: ['echo', 'x'],
    limits: LIMITS,
    network,
  });
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

/** Runs a script to its end and returns its output. */
async function run(launcher: JobLauncher, jobId: string, image: string, script: string): Promise<string> {
  const job = await launcher.launch({
    jobId,
    image,
    argv: ['sh', '-c', script],
    limits: LIMITS,
    network: 'egress',
    timeoutSeconds: 3600,
  });
  const chunks: Buffer[] = [];
  job.output.on('data', (c: Buffer) => chunks.push(c));
  const r = await job.result;
  const text = Buffer.concat(chunks).toString();
  if (r.exitCode !== 0) throw new Error(`job ${jobId} exited ${r.exitCode}: ${text.slice(-2000)}`);
  return text;
}

const row = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
say(`Machine: ${await machine()}`);
say();

// 1. Launch, egress vs none.
say(`### Launch to first output, network egress vs none (${RUNS} runs each, ms)`);
say();
say(row(['arch', 'start', 'network', 'p50', 'min', 'p90', 'max']));
say(row(['---', '---', '---', '---:', '---:', '---:', '---:']));
for (const arch of ARCH_LIST) {
  const runtime = await runtimeFor(arch);
  const warmPool = createWarmPool({
    runtime,
    images: store,
    targets: { busybox: 1 },
    networks: ['none', 'egress'],
    limits: LIMITS,
    logger,
  });
  const warm = createJobLauncher({ runtime, images: store, logger, warmPool });
  const cold = createJobLauncher({ runtime, images: store, logger });
  warmPool.start();
  const samples: Record<string, number[]> = {};
  for (let i = 0; i < RUNS; i++) {
    for (const network of ['none', 'egress'] as const) {
      await warmPool.filled();
      const w = await firstByte(warm, `bw-${network}-${i}`, network, true);
      const c = await firstByte(cold, `bc-${network}-${i}`, network, false);
      samples[`warm ${network}`] = [...(samples[`warm ${network}`] ?? []), w];
      samples[`cold ${network}`] = [...(samples[`cold ${network}`] ?? []), c];
    }
  }
  for (const [key, s] of Object.entries(samples).sort()) {
    const [start, network] = key.split(' ');
    const x = summarize(s);
    say(row([arch, start ?? '', network ?? '', ms(x.p50), ms(x.min), ms(x.p90), ms(x.max)]));
  }
  await warm.close();
  await cold.close();
}
say();

// 2. apt install, first (empty cache) vs second job.
async function emptyPackageCache(): Promise<void> {
  const dir = join(config.ARCHWAY_NET_STATE_DIR, 'apt-cacher-ng');
  const args = JSON.parse(await readFile(join(dir, 'pid.args'), 'utf8')) as string[];
  const cacheDir = args.find((a) => a.startsWith('CacheDir='))?.slice('CacheDir='.length);
  const pid = Number((await readFile(join(dir, 'pid'), 'utf8')).trim());
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 50; i++) {
    try {
      process.kill(pid, 0);
      await new Promise((r) => setTimeout(r, 100));
    } catch {
      break;
    }
  }
  if (cacheDir) {
    const entries = await runCommand('ls', ['-A', cacheDir]).catch(() => '');
    for (const name of entries.split('\n').filter(Boolean))
      await rm(join(cacheDir, name), { recursive: true, force: true });
  }
}

/** .deb files the cache fetched from the mirror, per its transfer log, so far. */
async function debsFetched(): Promise<number> {
  const log = await readFile(
    join(config.ARCHWAY_NET_STATE_DIR, 'apt-cacher-ng', 'log', 'apt-cacher.log'),
    'utf8',
  ).catch(() => '');
  return log.split('\n').filter((l) => l.split('|')[1] === 'I' && /\.deb$/.test(l)).length;
}

if (APT_ARCHES.length) {
  say(`### apt-get install -y ${PACKAGES}: first job (empty cache) vs the next`);
  say();
  say(
    row([
      'arch',
      'job',
      'download (s)',
      'unpack and configure (s)',
      'install step (s)',
      '.deb files fetched from the mirror',
    ]),
  );
  say(row(['---', '---', '---:', '---:', '---:', '---:']));
  await emptyPackageCache();
  for (const arch of APT_ARCHES) {
    const runtime = await runtimeFor(arch); // (re)starts the cache when it is not running
    const launcher = createJobLauncher({ runtime, images: store, logger });
    for (const which of ['first', 'second']) {
      const before = await debsFetched();
      const text = await run(
        launcher,
        `apt-${arch}-${which}`,
        'debian-bookworm',
        [
          'apt-get update -qq',
          'export DEBIAN_FRONTEND=noninteractive',
          't0=$(date +%s.%N)',
          `apt-get install -y -qq --no-install-recommends --download-only ${PACKAGES} >/dev/null`,
          't1=$(date +%s.%N)',
          `apt-get install -y -qq --no-install-recommends ${PACKAGES} >/dev/null`,
          't2=$(date +%s.%N)',
          'echo "install $t0 $t1 $t2"',
        ].join(' && '),
      );
      const m = text.match(/install (\S+) (\S+) (\S+)/);
      const fetch = m ? Number(m[2]) - Number(m[1]) : Number.NaN;
      const unpack = m ? Number(m[3]) - Number(m[2]) : Number.NaN;
      say(
        row([
          arch,
          which,
          fetch.toFixed(1),
          unpack.toFixed(1),
          (fetch + unpack).toFixed(1),
          (await debsFetched()) - before,
        ]),
      );
    }
    await launcher.close();
  }
  say();
}

// 3. Download throughput, job vs host.
if (DOWNLOADS > 0) {
  const runtime = await runtimeFor('amd64');
  const launcher = createJobLauncher({ runtime, images: store, logger });
  const job: number[] = [];
  const host: number[] = [];
  for (let i = 0; i < DOWNLOADS; i++) {
    const text = await run(
      launcher,
      `dl-${i}`,
      'busybox',
      // busybox's date has no %N: /proc/uptime counts hundredths of a second.
      `t0=$(cut -d' ' -f1 /proc/uptime); wget -q -O /dev/null ${DEB}; t1=$(cut -d' ' -f1 /proc/uptime); echo "dl $t0 $t1"`,
    );
    const m = text.match(/dl (\S+) (\S+)/);
    job.push(m ? (Number(m[2]) - Number(m[1])) * 1000 : Number.NaN);
    const t0 = performance.now();
    await runCommand('curl', ['-sf', '-o', '/dev/null', DEB]);
    host.push(performance.now() - t0);
  }
  const mbps = (msTaken: number) => (21_840_232 / 2 ** 20 / (msTaken / 1000)).toFixed(1);
  const j = summarize(job);
  const h = summarize(host);
  say(`### Download of a 21 MB .deb from the mirror (${DOWNLOADS} runs; MiB/s at p50, min and max time)`);
  say();
  say(row(['where', 'p50 MiB/s', 'p50 ms', 'min ms', 'max ms']));
  say(row(['---', '---:', '---:', '---:', '---:']));
  say(row(['job (egress, NAT)', mbps(j.p50), ms(j.p50), ms(j.min), ms(j.max)]));
  say(row(['host', mbps(h.p50), ms(h.p50), ms(h.min), ms(h.max)]));
  await launcher.close();
}
console.log(out.join('\n'));
