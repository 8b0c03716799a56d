import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { durableRedisArgs } from './redis-args.ts';
import type { TestRedis } from './redis-server.ts';

/**
 * The primaries of the suite's Redis Cluster (ARCHWAY_TEST_REDIS=cluster). Their cluster bus
 * ports are these + 10000; both must be free (ARCHWAY_TEST_CLUSTER_PORT moves them). The default
 * keeps the bus ports below Linux's ephemeral range (32768-60999), where an outgoing connection
 * can hold one (in CI a server at 26108, bus 36108, never answered).
 */
const BASE = Number(process.env.ARCHWAY_TEST_CLUSTER_PORT ?? 21_500);
/** Sets of ports tried before giving up, when a server cannot bind (it exits at once). */
const TRIES = 4;

/**
 * A real 3-primary Redis Cluster of the test's own (`redis-server --cluster-enabled yes` x 3,
 * then `redis-cli --cluster create`), AOF on and noeviction as archway requires. Its URL is
 * `redis+cluster://...`. One at a time per process: each call takes the next three ports.
 */
let next = 0;
export async function startRedisCluster(): Promise<TestRedis> {
  for (let i = 1; ; i++) {
    try {
      return await startOn([0, 1, 2].map((n) => BASE + next + n));
    } catch (e) {
      if (!(e instanceof PortsTaken) || i >= TRIES) throw e;
    } finally {
      next += 3;
    }
  }
}

/** A server of the cluster exited before it answered: a port (or its bus port) was taken. */
class PortsTaken extends Error {}

async function startOn(ports: number[]): Promise<TestRedis> {
  const dir = await mkdtemp(join(tmpdir(), 'archway-cluster-'));
  const procs: ChildProcess[] = [];
  for (const port of ports) {
    const d = join(dir, String(port));
    await mkdir(d);
    procs.push(
      spawn(
        'redis-server',
        durableRedisArgs(port, d, [
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          'nodes.conf',
          '--cluster-node-timeout',
          '5000',
        ]),
        { stdio: 'ignore' },
      ),
    );
  }
  const cli = (port: number, ...args: string[]) =>
    execa('redis-cli', ['-p', String(port), ...args], { reject: false, timeout: 10_000 });
  const until = async (what: string, f: () => Promise<boolean>, ms = 30_000) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (await f()) return;
      const gone = procs.findIndex((p) => p.exitCode !== null || p.signalCode !== null);
      if (gone >= 0)
        throw new PortsTaken(
          `redis-server on ${ports[gone]} exited at start (its port or bus port ${(ports[gone] ?? 0) + 10_000} is taken?)`,
        );
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`Redis Cluster on ${ports.join(',')}: timed out waiting for ${what}`);
  };
  const stop = async () => {
    await Promise.all(
      procs.map(async (p) => {
        if (p.exitCode !== null || p.signalCode !== null) return;
        const exited = once(p, 'exit');
        p.kill('SIGKILL');
        await exited;
      }),
    );
    await rm(dir, { recursive: true, force: true });
  };
  try {
    for (const port of ports)
      await until(`${port} to answer`, async () => (await cli(port, 'ping')).stdout === 'PONG');
    const made = await execa(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...ports.map((p) => `127.0.0.1:${p}`),
        '--cluster-replicas',
        '0',
        '--cluster-yes',
      ],
      { reject: false, timeout: 30_000 },
    );
    if (made.exitCode !== 0)
      throw new Error(`redis-cli --cluster create failed: ${made.stdout}${made.stderr}`);
    for (const port of ports)
      await until('cluster_state:ok', async () =>
        (await cli(port, 'cluster', 'info')).stdout.includes('cluster_state:ok'),
      );
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    url: `redis+cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`,
    port: ports[0] ?? 0,
    async restart() {
      throw new Error('the test cluster is not restarted');
    },
    stop,
  };
}
