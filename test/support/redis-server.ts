import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { durableRedisArgs } from './redis-args.ts';
import { startRedisCluster } from './redis-cluster.ts';

/** A free TCP port on the loopback. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

export interface TestRedis {
  url: string;
  port: number;
  /** SIGKILLs the server (as a crash would) and starts it again on the same port and data dir (AOF). */
  restart(opts?: { downMs?: number }): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A real redis-server of the test's own, on a free port, with AOF on (so a restart keeps what
 * was acknowledged) and maxmemory-policy noeviction, as archway requires.
 */
export async function startRedis(): Promise<TestRedis> {
  // The suite's cluster mode: the same tests against a real 3-primary Redis Cluster.
  if (process.env.ARCHWAY_TEST_REDIS === 'cluster') return startRedisCluster();
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'archway-redis-'));
  let proc: ChildProcess | undefined;
  const start = async () => {
    proc = spawn('redis-server', durableRedisArgs(port, dir), { stdio: 'ignore' });
    const probe = new Redis({
      port,
      host: '127.0.0.1',
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    probe.on('error', () => {});
    for (let i = 0; i < 200; i++) {
      try {
        await probe.connect();
        await probe.ping();
        probe.disconnect();
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    probe.disconnect();
    throw new Error(`redis-server did not start on port ${port}`);
  };
  const kill = async () => {
    const p = proc;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    async restart(o = {}) {
      await kill();
      await new Promise((r) => setTimeout(r, o.downMs ?? 200));
      await start();
    },
    async stop() {
      await kill();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Keys in the test's Redis: DBSIZE, summed over the primaries in the suite's cluster mode (DBSIZE is per node). */
export async function keyCount(redis: Redis): Promise<number> {
  const cluster = redis as unknown as { isCluster?: boolean; nodes?: (role: 'master') => Redis[] };
  if (!cluster.isCluster || !cluster.nodes) return redis.dbsize();
  const counts = await Promise.all(cluster.nodes('master').map((n) => n.dbsize()));
  return counts.reduce((a, b) => a + b, 0);
}

/**
 * Whether a connection archway closed has closed: `end` for a Redis connection. A Cluster client
 * (the suite's cluster mode) stops at `close` once every node's connection is gone, and one
 * closed while it was still connecting stays `disconnecting` for ever with no connection open
 * (ioredis 5.11; checked with ss): closed too when it holds no node's connection.
 */
export function connectionClosed(redis: Redis): boolean {
  const cluster = redis as unknown as { isCluster?: boolean; nodes?: (role: 'all') => Redis[] };
  if (!cluster.isCluster) return redis.status === 'end';
  const status: string = redis.status;
  return (
    status === 'end' ||
    status === 'close' ||
    (status === 'disconnecting' && (cluster.nodes?.('all').length ?? 0) === 0)
  );
}

/** CONFIG SET on the test's Redis: on every node in the suite's cluster mode (CONFIG is per node). */
export async function configSetAll(redis: Redis, key: string, value: string): Promise<void> {
  const cluster = redis as unknown as { isCluster?: boolean; nodes?: () => Redis[] };
  const servers = cluster.isCluster && cluster.nodes ? cluster.nodes() : [redis];
  await Promise.all(servers.map((s) => s.config('SET', key, value)));
}
