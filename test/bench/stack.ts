import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createNodeRegistry } from '../../queue/index.ts';
import { type Arch, createKeys, createRedis, runCommand } from '../../src/core/index.ts';
import { freePort, startRedis, type TestRedis } from '../support/redis-server.ts';

const BIN = new URL('../../bin/archway', import.meta.url).pathname;

/** The benchmark's own stack: redis-server, the API and worker processes, all real, on this host. */
export interface BenchStack {
  url: string;
  token: string;
  prefix: string;
  redis: TestRedis;
  workers: ChildProcess[];
  /** The API's process. */
  apiProcess: ChildProcess;
  addWorker(
    arch: string,
    opts?: { slots?: number; warm?: number; env?: Record<string, string> },
  ): ChildProcess;
  api(path: string, init?: RequestInit): Promise<Response>;
  close(): Promise<void>;
}

/**
 * The benchmark's pool and runtime state; ARCHWAY_BENCH_POOL, ARCHWAY_BENCH_RUN_DIR,
 * ARCHWAY_BENCH_CGROUP_PARENT, ARCHWAY_BENCH_UID_BASE and ARCHWAY_BENCH_UID_LEASE_DIR move them
 * (as the tests' move variables do), so a run beside another engineer's shares nothing. The
 * pool must hold the busybox image built for that uid base.
 */
export const BENCH_ENV = {
  ARCHWAY_POOL_PATH: process.env.ARCHWAY_BENCH_POOL ?? '/var/lib/archway-bench',
  ARCHWAY_RUN_DIR: process.env.ARCHWAY_BENCH_RUN_DIR ?? '/run/archway-bench',
  ARCHWAY_CGROUP_PARENT: process.env.ARCHWAY_BENCH_CGROUP_PARENT ?? 'archway-bench',
  ...(process.env.ARCHWAY_BENCH_UID_BASE ? { ARCHWAY_UID_BASE: process.env.ARCHWAY_BENCH_UID_BASE } : {}),
  ...(process.env.ARCHWAY_BENCH_UID_LEASE_DIR
    ? { ARCHWAY_UID_LEASE_DIR: process.env.ARCHWAY_BENCH_UID_LEASE_DIR }
    : {}),
  ARCHWAY_LOG_LEVEL: 'warn',
};

/**
 * With ARCHWAY_BENCH_PROFILE=DIR, the API and the workers run with `--cpu-prof` and write their
 * profiles into DIR when they stop (`npx tsx test/bench/profile-top.ts DIR/*.cpuprofile` sums
 * them). Node refuses --cpu-prof in NODE_OPTIONS, so they run the built CLI under node directly.
 */
const PROFILE = process.env.ARCHWAY_BENCH_PROFILE;
const MAIN = new URL('../../dist/current/cli/main.js', import.meta.url).pathname;
function archway(args: string[], opts: Parameters<typeof spawn>[2]): ChildProcess {
  const flags = (process.env.ARCHWAY_BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
  if (!PROFILE && flags.length === 0) return spawn(BIN, args, opts);
  const prof = PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${PROFILE}`] : [];
  const out = process.env.ARCHWAY_BENCH_NODE_OUT;
  return spawn('node', [...prof, ...flags, '--enable-source-maps', MAIN, ...args], {
    ...opts,
    ...(out ? { stdio: ['ignore', openSync(`${out}.${args[0]}.${Date.now()}`, 'w'), 'inherit'] } : {}),
  });
}

export async function startStack(): Promise<BenchStack> {
  const redis = await startRedis();
  const port = await freePort();
  const token = randomBytes(24).toString('hex');
  const prefix = `b${randomBytes(3).toString('hex')}`;
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    ...BENCH_ENV,
    REDIS_URL: redis.url,
    ARCHWAY_REDIS_PREFIX: prefix,
    ARCHWAY_TOKEN: token,
    ARCHWAY_PORT: String(port),
  };
  const procs: ChildProcess[] = [];
  const workers: ChildProcess[] = [];
  // bin/archway builds dist/ first when a source is newer.
  if (PROFILE || process.env.ARCHWAY_BENCH_NODE_FLAGS) await runCommand(BIN, ['--version']);
  const apiProcess = archway(['api'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  procs.push(apiProcess);
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    const ok = await fetch(`${url}/readyz`)
      .then((r) => r.ok)
      .catch(() => false);
    if (ok) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const api = (path: string, init: RequestInit = {}) =>
    fetch(`${url}${path}`, {
      ...init,
      headers: {
        authorization: `Bearer ${token}`,
        'content-type': 'application/json',
        ...(init.headers ?? {}),
      },
    });
  return {
    url,
    token,
    prefix,
    redis,
    workers,
    apiProcess,
    addWorker(arch, o = {}) {
      const p = archway(
        ['worker', '--arch', arch, '--slots', String(o.slots ?? 2), '--warm', String(o.warm ?? 1)],
        {
          env: { ...env, ...(o.env ?? {}) },
          stdio: ['ignore', 'ignore', 'inherit'],
        },
      );
      procs.push(p);
      workers.push(p);
      return p;
    },
    api,
    async close() {
      for (const p of procs) p.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 300));
      for (const p of procs) p.kill('SIGTERM');
      await Promise.all(
        procs.map((p) => (p.exitCode !== null ? undefined : new Promise((r) => p.once('exit', r)))),
      );
      await redis.stop();
    },
  };
}

/** Waits until `n` worker nodes of `arch` are registered and live (they register once their runtime is ready). */
export async function waitForNodes(stack: BenchStack, arch: Arch, n: number): Promise<void> {
  const redis = createRedis({ url: stack.redis.url, name: 'bench' });
  const nodes = createNodeRegistry(redis, createKeys(stack.prefix));
  try {
    for (let i = 0; i < 1200; i++) {
      if ((await nodes.live(arch)).length >= n) return;
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error(`${n} ${arch} node(s) did not come up`);
  } finally {
    redis.disconnect();
  }
}

/** Resident memory of a process now (VmRSS), in MiB. */
export async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return Number(status.match(/^VmRSS:\s+(\d+) kB/m)?.[1] ?? 0) / 1024;
}

/** CPU time a process has used so far (user + system, from /proc/PID/stat), in seconds. */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  // Fields after the command (which may hold spaces) start at the last ')': utime and stime are 14 and 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11] ?? 0) + Number(f[12] ?? 0)) / 100;
}

/** CPU time the children a process has waited for have used (user + system: runc, btrfs, nsenter for a worker), in seconds. */
export async function childrenCpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[13] ?? 0) + Number(f[14] ?? 0)) / 100;
}

/** CPU time of the benchmark's containers so far (their cgroup parent's cpuacct, v1, or cpu.stat, v2), in seconds. */
export async function containersCpuSeconds(): Promise<number> {
  const parent = BENCH_ENV.ARCHWAY_CGROUP_PARENT;
  const v1 = await readFile(`/sys/fs/cgroup/cpuacct/${parent}/cpuacct.usage`, 'utf8').catch(() => '');
  if (v1) return Number(v1) / 1e9;
  for (const root of ['/sys/fs/cgroup/unified', '/sys/fs/cgroup']) {
    const v2 = await readFile(`${root}/${parent}/cpu.stat`, 'utf8').catch(() => '');
    const usec = /^usage_usec (\d+)/m.exec(v2)?.[1];
    if (usec) return Number(usec) / 1e6;
  }
  return 0;
}

/** The machine's CPU time so far, busy and all (from /proc/stat), in seconds. */
export async function machineCpuSeconds(): Promise<{ busy: number; total: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0] ?? '';
  const t = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = t.reduce((a, b) => a + b, 0);
  const idle = (t[3] ?? 0) + (t[4] ?? 0);
  return { busy: (total - idle) / 100, total: total / 100 };
}

/** The 1-minute load average now. */
export async function loadAverage(): Promise<number> {
  return Number((await readFile('/proc/loadavg', 'utf8')).split(' ')[0]);
}
