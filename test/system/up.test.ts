import { type ChildProcess, spawn } from 'node:child_process';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { createImageStore } from '../../images/index.ts';
import { poolLayout, portAnswers } from '../../src/core/index.ts';
import { checkLeftovers } from '../support/leak-check.ts';
import { TEST_ENV } from '../support/test-host.ts';

const BIN = new URL('../../bin/archway', import.meta.url).pathname;
// Ports in this suite's own range (the machine runs other stacks beside it). up gives its workers
// the metrics ports after the API's (API + 1, ...): Redis keeps clear of them.
const API_PORT = 23041;
const REDIS_PORT = 23049;

interface Up {
  proc: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

/** `archway up` as a terminal runs it: the leader of its own process group, which Ctrl-C signals whole. */
function up(
  extra: Record<string, string> = {},
  args = ['--no-demo', '--arches', 'amd64'],
  base: Record<string, string | undefined> = TEST_ENV,
): Up {
  let text = '';
  const proc = spawn(BIN, ['up', ...args], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      ...base,
      ARCHWAY_PORT: String(API_PORT),
      ARCHWAY_UP_REDIS_PORT: String(REDIS_PORT),
      ARCHWAY_TOKEN: 'up-test-token-0123456789',
      ...extra,
    },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout?.on('data', (d: Buffer) => {
    text += d.toString();
  });
  proc.stderr?.on('data', (d: Buffer) => {
    text += d.toString();
  });
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  return { proc, out: () => text, exited };
}

async function waitFor(what: string, check: () => boolean | Promise<boolean>, ms = 120_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Processes of the session `sid`, and the Redis servers `up` started on `ports` (in sessions of their own). */
async function strays(sid: number, ports = [REDIS_PORT]): Promise<string[]> {
  const found: string[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cmd = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).replaceAll('\0', ' ');
    if (fields[0] === 'Z') continue;
    if (Number(fields[3]) === sid || ports.some((p) => cmd.startsWith(`redis-server 127.0.0.1:${p} `)))
      found.push(`${pid} ${cmd}`);
  }
  return found;
}

const token = { authorization: 'Bearer up-test-token-0123456789', 'content-type': 'application/json' };
const api = (path: string, init: RequestInit = {}) =>
  fetch(`http://127.0.0.1:${API_PORT}${path}`, { ...init, headers: token });

/** A job that runs until it is stopped, once it is running. */
async function runningJob(): Promise<string> {
  const res = await api('/v1/jobs', {
    method: 'POST',
    body: JSON.stringify({ arch: 'amd64', image: 'busybox', script: 'echo started; sleep 300' }),
  });
  const { job } = (await res.json()) as { job: { id: string } };
  await waitFor('the job to run', async () => {
    const j = (await (await api(`/v1/jobs/${job.id}`)).json()) as { state: string };
    return j.state === 'running';
  });
  return job.id;
}

let current: Up | undefined;
beforeEach(async () => {
  // up keeps its Redis under the pool (AOF): each test starts with none, so no job of an earlier one runs.
  await rm(poolLayout(TEST_ENV.ARCHWAY_POOL_PATH).upRedis, { recursive: true, force: true });
});
checkLeftovers('each', async () => {
  // A failed test must not leave its stack running: its group, and the Redis in its own session.
  if (current && current.proc.exitCode === null) {
    process.kill(-(current.proc.pid ?? 0), 'SIGKILL');
    await current.exited;
  }
  for (const line of await strays(current?.proc.pid ?? -1))
    process.kill(Number(line.split(' ')[0]), 'SIGKILL');
  current = undefined;
});

// Issue #10 item 5: Redis stops last, up exits with its parts, nothing is orphaned.
describe('archway up stops cleanly', { timeout: 240_000 }, () => {
  it('on an unreachable REDIS_URL exits at once, non-zero, with the message and the fix, no stack trace', async () => {
    current = up({ REDIS_URL: `redis://127.0.0.1:${REDIS_PORT + 1}` });
    const code = await Promise.race([
      current.exited,
      new Promise((r) => setTimeout(() => r('hung'), 30_000)),
    ]);
    expect(code).toBe(1);
    expect(current.out()).toMatch(
      new RegExp(`cannot reach Redis at redis://127\\.0\\.0\\.1:${REDIS_PORT + 1}: ECONNREFUSED \\(start it`),
    );
    expect(current.out()).not.toMatch(/^\s+at /m);
  });

  for (const [name, signals] of [
    ['Ctrl-C once', ['SIGINT']],
    ['Ctrl-C twice', ['SIGINT', 'SIGINT']],
    ['SIGTERM to up alone', ['SIGTERM']],
  ] as const) {
    it(`${name}, with a job running: Redis stops last, no process or container is left`, async () => {
      current = up();
      const u = current;
      await waitFor('the banner', () => u.out().includes('archway is up'));
      expect(u.out()).toMatch(`started redis-server on 127.0.0.1:${REDIS_PORT}`);
      // The banner is the last thing up says.
      expect(u.out().trimEnd()).toMatch(/Ctrl-C stops everything\.$/);
      await runningJob();
      const pid = u.proc.pid ?? 0;
      for (const s of signals) {
        // Ctrl-C signals the terminal's whole foreground group; SIGTERM comes to up alone.
        process.kill(s === 'SIGINT' ? -pid : pid, s);
        await new Promise((r) => setTimeout(r, 150));
      }
      const code = await Promise.race([u.exited, new Promise((r) => setTimeout(() => r('hung'), 90_000))]);
      expect(code).toBe(0);
      expect(u.out()).toMatch(/stopped; no container left/);
      expect(await portAnswers(REDIS_PORT)).toBe(false);
      expect(await strays(pid)).toEqual([]);
    });
  }

  it('a worker SIGKILLed mid-job stops the stack with a message naming it, and leaves nothing', async () => {
    current = up();
    const u = current;
    await waitFor('the banner', () => u.out().includes('archway is up'));
    await runningJob();
    const { nodes } = (await (await api('/v1/nodes')).json()) as { nodes: { id: string; lost: boolean }[] };
    const node = nodes.find((n) => !n.lost);
    const workerPid = Number(node?.id.split('-').at(-1));
    expect(workerPid).toBeGreaterThan(1);
    process.kill(workerPid, 'SIGKILL');
    const code = await Promise.race([u.exited, new Promise((r) => setTimeout(() => r('hung'), 90_000))]);
    expect(code).toBe(1);
    expect(u.out()).toMatch(/the amd64 worker exited \(SIGKILL\)/);
    expect(await portAnswers(REDIS_PORT)).toBe(false);
    expect(await strays(u.proc.pid ?? 0)).toEqual([]);
  });
});

// Issue #10 item 6: a second installation with its own pool but the default run directory and
// cgroup parent reaped the first one's containers. Neither sets them here: they follow the pool.
describe('archway up killed with SIGKILL', { timeout: 240_000 }, () => {
  it('its API and workers stop by themselves, and the next up adopts the Redis it left and stops it', async () => {
    const first = up();
    current = first;
    await waitFor('the banner', () => first.out().includes('archway is up'));
    const firstPid = first.proc.pid ?? 0;
    try {
      process.kill(firstPid, 'SIGKILL');
      await first.exited;
      // No part runs on unsupervised: only the Redis (its own session, its data) is left.
      await waitFor(
        'the API and the worker to stop',
        async () => (await strays(firstPid, [])).length === 0,
        60_000,
      );
      expect(await portAnswers(REDIS_PORT)).toBe(true);
      current = up();
      const second = current;
      await waitFor('the second banner', () => second.out().includes('archway is up'));
      expect(second.out()).toMatch(
        new RegExp(
          `using the Redis an earlier up started on 127\\.0\\.0\\.1:${REDIS_PORT} \\(pid \\d+; that up was killed\\)`,
        ),
      );
      process.kill(second.proc.pid ?? 0, 'SIGTERM');
      const code = await Promise.race([
        second.exited,
        new Promise((r) => setTimeout(() => r('hung'), 90_000)),
      ]);
      expect(code).toBe(0);
      expect(await portAnswers(REDIS_PORT)).toBe(false);
      expect(await strays(second.proc.pid ?? 0)).toEqual([]);
    } finally {
      for (const line of await strays(firstPid, [])) process.kill(Number(line.split(' ')[0]), 'SIGKILL');
    }
  });
});

describe('two installations on one host', { timeout: 300_000 }, () => {
  const POOL_B = `${TEST_ENV.ARCHWAY_POOL_PATH}-two`;
  const { ARCHWAY_RUN_DIR: _r, ARCHWAY_CGROUP_PARENT: _c, ...hostEnv } = TEST_ENV;
  const stack = (pool: string, apiPort: number, redisPort: number): Up & { api: typeof api } => {
    const u = up(
      {
        ARCHWAY_POOL_PATH: pool,
        ARCHWAY_PORT: String(apiPort),
        ARCHWAY_UP_REDIS_PORT: String(redisPort),
        // Apart from the other stack's ports: by default the workers' follow the API's (+1).
        ARCHWAY_WORKER_METRICS_PORT: String(apiPort + 10),
      },
      undefined,
      hostEnv,
    );
    return {
      ...u,
      api: (path: string, init: RequestInit = {}) =>
        fetch(`http://127.0.0.1:${apiPort}${path}`, { ...init, headers: token }),
    };
  };
  const runningIn = async (s: { api: typeof api }) => {
    const res = await s.api('/v1/jobs', {
      method: 'POST',
      body: JSON.stringify({ arch: 'amd64', image: 'busybox', script: 'echo started; sleep 300' }),
    });
    const { job } = (await res.json()) as { job: { id: string } };
    await waitFor('the job to run', async () => {
      const j = (await (await s.api(`/v1/jobs/${job.id}`)).json()) as { state: string };
      return j.state === 'running';
    });
    return job.id;
  };
  const state = async (s: { api: typeof api }, id: string) =>
    (await (await s.api(`/v1/jobs/${id}`)).json()) as { state: string; attempts: unknown[] };

  it('run side by side, each on its own pool: neither reaps the other', async () => {
    await rm(`${POOL_B}/redis`, { recursive: true, force: true });
    // The second pool has no busybox: its up builds it, and shows the build's phases.
    const store = createImageStore({ poolPath: POOL_B });
    const held = await store.resolve('busybox', 'amd64').catch(() => undefined);
    if (held) {
      await rm(join(store.dirOf('busybox', 'amd64'), 'current'));
      await store.remove('busybox', 'amd64', held.digest);
    }
    const a = stack(TEST_ENV.ARCHWAY_POOL_PATH, 23061, 23068);
    const b = stack(POOL_B, 23065, 23069);
    try {
      await waitFor('stack one', () => a.out().includes('archway is up'), 180_000);
      const jobA = await runningIn(a);
      // The second one starts while the first runs a job: its workers' start-up reap must spare it.
      await waitFor('stack two', () => b.out().includes('archway is up'), 180_000);
      expect(b.out()).toMatch(/building the busybox image for amd64/);
      expect(b.out()).toMatch(/busybox\/amd64: shifting owners/);
      const jobB = await runningIn(b);
      expect(await state(a, jobA)).toMatchObject({ state: 'running', attempts: [expect.anything()] });
      // The first stops (and reaps what its own workers leave); the second's job runs on.
      process.kill(-(a.proc.pid ?? 0), 'SIGINT');
      expect(await a.exited).toBe(0);
      await new Promise((r) => setTimeout(r, 1000));
      expect(await state(b, jobB)).toMatchObject({ state: 'running', attempts: [expect.anything()] });
      process.kill(-(b.proc.pid ?? 0), 'SIGINT');
      expect(await b.exited).toBe(0);
      for (const pool of [TEST_ENV.ARCHWAY_POOL_PATH, POOL_B]) {
        const name = pool.slice('/var/lib/'.length);
        const layout = poolLayout(pool);
        for (const dir of [...layout.snapshotDirs, layout.bundles]) expect(await readdir(dir)).toEqual([]);
        expect(await readdir(`/run/${name}/runc`).catch(() => [])).toEqual([]);
      }
    } finally {
      for (const s of [a, b]) if (s.proc.exitCode === null) process.kill(-(s.proc.pid ?? 0), 'SIGKILL');
      for (const s of [a, b]) {
        for (const line of await strays(s.proc.pid ?? -1, [23068, 23069]))
          process.kill(Number(line.split(' ')[0]), 'SIGKILL');
      }
    }
  });
});
