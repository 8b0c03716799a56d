import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { expect, it } from 'vitest';
import { runScaler, type ScalerProcess } from '../../ops/scaler/index.ts';
import { createJobQueue, createNodeRegistry, createPoolStore, type JobQueue } from '../../queue/index.ts';
import { createKeys, FINAL_STATES, JobSpec } from '../../src/core/index.ts';
import { checkLeftovers } from '../support/leak-check.ts';
import { startRedis, type TestRedis } from '../support/redis-server.ts';
import { eventually, TEST_ENV } from '../support/test-host.ts';

let server: TestRedis | undefined;
let client: Redis | undefined;
let queue: JobQueue | undefined;
let scaler: ScalerProcess | undefined;

checkLeftovers('each', async () => {
  await scaler?.close();
  await queue?.close();
  client?.disconnect();
  await server?.stop();
  scaler = undefined;
  queue = undefined;
  client = undefined;
  server = undefined;
});

it('scales amd64 up from 0 under a burst with real worker processes, runs the jobs, then drains back to 0', async () => {
  server = await startRedis();
  client = new Redis(server.url, { maxRetriesPerRequest: null });
  const keys = createKeys(`sc${randomBytes(3).toString('hex')}`);
  queue = createJobQueue({ redis: client, keys, logRetentionSeconds: 600 });
  const q = queue;
  const nodes = createNodeRegistry(client, keys);
  const pools = createPoolStore(client, keys);
  await pools.set('amd64', { min: 0, max: 2, slotsPerNode: 2 });

  scaler = await runScaler(
    {
      PATH: process.env.PATH,
      ...TEST_ENV,
      REDIS_URL: server.url,
      ARCHWAY_REDIS_PREFIX: keys.prefix,
      ARCHWAY_SCALER_PROVIDER: 'local',
      ARCHWAY_SCALER_ARCHES: 'amd64',
      ARCHWAY_SCALER_INTERVAL_SECONDS: '0.5',
      ARCHWAY_SCALER_UP_AFTER_SECONDS: '1',
      ARCHWAY_SCALER_UP_COOLDOWN_SECONDS: '2',
      ARCHWAY_SCALER_DOWN_AFTER_SECONDS: '3',
      ARCHWAY_SCALER_BOOT_TIMEOUT_SECONDS: '60',
    },
    { handleSignals: false, localCloseTimeoutMs: 10_000 },
  );
  const local = scaler.local;
  if (!local) throw new Error('expected the local provider');
  expect(scaler.scaler.leader).toBe(true);
  // Nothing waits: no node is started, and the pool says what it wants.
  expect(local.workers()).toEqual([]);
  expect((await pools.get('amd64')).desired).toBe(0);

  // A burst of 6 jobs: 3 nodes of 2 slots would take them all, max is 2.
  const ids: string[] = [];
  for (let i = 0; i < 6; i++) {
    const spec = JobSpec.parse({ arch: 'amd64', image: 'busybox', script: `echo job-${i}; sleep 1` });
    ids.push((await q.submit(spec, { clientId: 'test' })).job.id);
  }
  await eventually(async () => (await pools.get('amd64')).desired === 2, 'desired 2', 5_000);
  await eventually(
    async () => {
      const jobs = await Promise.all(ids.map((id) => q.get(id)));
      return jobs.every((j) => j && FINAL_STATES.includes(j.state));
    },
    'the burst to finish',
    45_000,
  );
  const jobs = await Promise.all(ids.map((id) => q.get(id)));
  expect(jobs.map((j) => j?.state)).toEqual(Array(6).fill('passed'));
  const started = local.workers();
  expect(started).toHaveLength(2);
  expect(started.every((w) => w.arch === 'amd64')).toBe(true);
  // Every job ran on a node the scaler started.
  const ours = new Set(started.map((w) => w.nodeId));
  expect(jobs.every((j) => j?.node && ours.has(j.node))).toBe(true);

  // Idle for 3 s: both nodes are drained; each leaves by itself and its process exits 0.
  await eventually(() => local.workers().every((w) => w.exit !== undefined), 'the workers to exit', 30_000);
  expect(local.workers().map((w) => w.exit)).toEqual([
    { code: 0, signal: undefined },
    { code: 0, signal: undefined },
  ]);
  expect(await nodes.list()).toEqual([]);
  expect((await pools.get('amd64')).desired).toBe(0);
});
