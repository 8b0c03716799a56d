import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { durableRedisArgs } from './redis-args.ts';
import type { TestRedis } from './redis-server.ts';

export interface TestSentinel extends TestRedis {
  /** The port of the server that is primary now (it changes at a failover). */
  primaryPort(): Promise<number>;
  /** SIGKILLs the current primary (a crashed machine); Sentinel promotes the replica. */
  killPrimary(): Promise<number>;
}

/**
 * A primary, its replica and one Sentinel watching them, each a real redis-server of the test's
 * own (AOF with fsync always, noeviction). The URL is `redis+sentinel://...`: clients find the
 * primary through the sentinel. `ports` must be free: the primary, the replica, the sentinel.
 */
export async function startSentinel(ports: {
  primary: number;
  replica: number;
  sentinel: number;
}): Promise<TestSentinel> {
  const dir = await mkdtemp(join(tmpdir(), 'archway-sentinel-'));
  const procs = new Map<number, ChildProcess>();
  const server = (port: number, extra: string[]) => {
    const p = spawn('redis-server', durableRedisArgs(port, join(dir, String(port)), extra), {
      stdio: 'ignore',
    });
    procs.set(port, p);
  };
  const ping = async (port: number, check: (r: Redis) => Promise<boolean>) => {
    const r = new Redis({
      port,
      host: '127.0.0.1',
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    r.on('error', () => undefined);
    try {
      await r.connect();
      return await check(r);
    } catch {
      return false;
    } finally {
      r.disconnect();
    }
  };
  const until = async (what: string, f: () => Promise<boolean>, ms = 20_000) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (await f()) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`timed out waiting for ${what}`);
  };
  for (const p of [ports.primary, ports.replica])
    await rm(join(dir, String(p)), { force: true, recursive: true });
  const { mkdir } = await import('node:fs/promises');
  for (const p of [ports.primary, ports.replica]) await mkdir(join(dir, String(p)));
  // The primary refuses writes when no replica has acknowledged within 10 s (docs/operations.md).
  server(ports.primary, ['--min-replicas-to-write', '1', '--min-replicas-max-lag', '10']);
  server(ports.replica, ['--replicaof', '127.0.0.1', String(ports.primary)]);
  await until('the replica to sync', () =>
    ping(ports.replica, async (r) => (await r.info('replication')).includes('master_link_status:up')),
  );
  const conf = join(dir, 'sentinel.conf');
  await writeFile(
    conf,
    [
      `port ${ports.sentinel}`,
      'bind 127.0.0.1',
      'protected-mode no',
      `dir ${dir}`,
      `sentinel monitor archway 127.0.0.1 ${ports.primary} 1`,
      'sentinel down-after-milliseconds archway 1000',
      'sentinel failover-timeout archway 10000',
      'sentinel parallel-syncs archway 1',
      '',
    ].join('\n'),
  );
  const sentinel = spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' });
  procs.set(ports.sentinel, sentinel);
  const askPrimary = async () => {
    let port = 0;
    await ping(ports.sentinel, async (r) => {
      const a = (await r.call('SENTINEL', 'get-master-addr-by-name', 'archway')) as string[] | null;
      port = Number(a?.[1] ?? 0);
      return true;
    });
    return port;
  };
  await until('the sentinel to know the primary and its replica', async () =>
    ping(ports.sentinel, async (r) => {
      const replicas = (await r.call('SENTINEL', 'replicas', 'archway')) as unknown[];
      return replicas.length === 1;
    }),
  );
  const kill = async (port: number) => {
    const p = procs.get(port);
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = once(p, 'exit');
    p.kill('SIGKILL');
    await exited;
  };
  return {
    url: `redis+sentinel://127.0.0.1:${ports.sentinel}/archway`,
    port: ports.sentinel,
    primaryPort: askPrimary,
    async killPrimary() {
      const port = await askPrimary();
      await kill(port);
      return port;
    },
    async restart() {
      throw new Error('a Sentinel set is not restarted: kill its primary instead');
    },
    async stop() {
      for (const port of procs.keys()) await kill(port);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
