import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createPoolStatus,
  createPoolStore,
  type JobQueue,
  type NodeRegistry,
  type PoolStore,
} from '../../queue/index.ts';
import type { ApiApp } from '../../src/api/index.ts';
import type { Arch, Keys } from '../../src/core/index.ts';
import { startTestApi, type TestApi } from '../support/test-api.ts';
import { testNode } from '../support/test-node.ts';

const ADMIN = `admin-${randomBytes(12).toString('hex')}`;
const CI = `ci-${randomBytes(12).toString('hex')}`;

let api: TestApi;
let redis: Redis;
let keys: Keys;
let queue: JobQueue;
let nodes: NodeRegistry;
let pools: PoolStore;
let app: ApiApp;

const as = (token: string) => ({ authorization: `Bearer ${token}` });

beforeAll(async () => {
  api = await startTestApi({
    name: 'pl',
    env: { ARCHWAY_TOKEN: ADMIN, ARCHWAY_TOKENS: `ci:read+submit:${CI}` },
    // These tests write finished jobs and read the estimate at once.
    medianCacheMs: 0,
  });
  ({ redis, keys, queue, nodes, app } = api);
  pools = createPoolStore(redis, keys);
});

afterAll(() => api?.close());

/** Submits `n` jobs of `arch` through the API. */
async function submitJobs(arch: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: as(CI),
      payload: { arch, image: 'busybox', script: 'true' },
    });
    expect(res.statusCode).toBe(201);
  }
}

/** Marks the arch's newest job passed after a run of `seconds` (what the median is made of); its id. */
async function finishNewest(arch: Arch, seconds: number): Promise<string> {
  const id = (await queue.list({ arch, limit: 1 })).jobs[0]?.id ?? '';
  await redis.hset(keys.job(id), {
    state: 'passed',
    startedAt: '2026-01-01T00:00:00.000Z',
    finishedAt: new Date(Date.parse('2026-01-01T00:00:00.000Z') + seconds * 1000).toISOString(),
  });
  return id;
}

interface PoolBody {
  arch: string;
  min: number;
  max: number;
  slotsPerNode: number;
  configured: boolean;
  desired: number | null;
  waiting: number;
  running: number;
  healthyNodes: number;
  freeSlots: number;
  oldestWaitingSeconds: number | null;
  estimatedWaitSeconds: number | null;
  estimate: { basis: string; note: string };
}

describe('pools API', () => {
  it('lists every arch with the defaults while nothing is configured', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/pools', headers: as(CI) });
    expect(res.statusCode).toBe(200);
    const { pools: list } = res.json() as { pools: PoolBody[] };
    expect(list.map((p) => p.arch)).toEqual(['amd64', 'arm64', 'ppc64le', 's390x']);
    expect(list[0]).toMatchObject({
      min: 0,
      max: 4,
      slotsPerNode: 2,
      configured: false,
      desired: null,
      waiting: 0,
      healthyNodes: 0,
      estimatedWaitSeconds: null,
      estimate: { basis: 'unknown' },
    });
  });

  it('sets a pool (admin only, aliases accepted), keeping the fields left out', async () => {
    const denied = await app.inject({
      method: 'PUT',
      url: '/v1/pools/arm64',
      headers: as(CI),
      payload: { max: 3 },
    });
    expect(denied.statusCode).toBe(403);
    const res = await app.inject({
      method: 'PUT',
      url: '/v1/pools/aarch64',
      headers: as(ADMIN),
      payload: { min: 1, max: 3 },
    });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ arch: 'arm64', min: 1, max: 3, slotsPerNode: 2, configured: true });
    const slots = await app.inject({
      method: 'PUT',
      url: '/v1/pools/arm64',
      headers: as(ADMIN),
      payload: { slotsPerNode: 4 },
    });
    expect(slots.json()).toMatchObject({ min: 1, max: 3, slotsPerNode: 4 });
  });

  it('refuses bad settings with 400 naming the field, and changes nothing', async () => {
    const cases: [Record<string, number>, string][] = [
      [{ min: 5 }, 'min'],
      [{ max: 0 }, 'max'],
      [{ max: 100_000 }, 'max'],
      [{ min: -1 }, 'min'],
      [{ slotsPerNode: 0 }, 'slotsPerNode'],
      [{ mx: 2 }, 'mx'],
    ];
    for (const [payload, field] of cases) {
      const res = await app.inject({ method: 'PUT', url: '/v1/pools/arm64', headers: as(ADMIN), payload });
      expect(res.statusCode, JSON.stringify(payload)).toBe(400);
      expect(res.json().error).toMatchObject({ code: 'INVALID_INPUT', field });
    }
    const bad = await app.inject({ method: 'PUT', url: '/v1/pools/sparc', headers: as(ADMIN), payload: {} });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.field).toBe('arch');
    expect(await pools.get('arm64')).toMatchObject({ min: 1, max: 3, slotsPerNode: 4 });
  });

  it('refuses a job for a disabled pool (max 0) with 409 POOL_DISABLED naming the arch', async () => {
    await pools.set('s390x', { min: 0, max: 0 });
    const res = await app.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: as(CI),
      payload: { arch: 's390x', image: 'busybox', script: 'true' },
    });
    expect(res.statusCode).toBe(409);
    expect(res.json().error.code).toBe('POOL_DISABLED');
    expect(res.json().error.message).toMatch(/s390x/);
    expect(await redis.zcard(keys.jobsAll)).toBe(0);
    const list = await app.inject({ method: 'GET', url: '/v1/pools/s390x', headers: as(CI) });
    expect(list.json()).toMatchObject({ max: 0, estimate: { basis: 'disabled' } });
  });

  it('shows waiting and running jobs, healthy nodes, the oldest wait and an estimate', async () => {
    await nodes.register(testNode('pp-1', 'ppc64le', { hostArch: 'x64' }));
    const free = await app.inject({ method: 'GET', url: '/v1/pools/ppc64le', headers: as(CI) });
    expect(free.json()).toMatchObject({ healthyNodes: 1, freeSlots: 2, estimatedWaitSeconds: 0 });

    await nodes.heartbeat('pp-1', { busy: 2, state: 'active' });
    await submitJobs('ppc64le', 3);
    // A finished job of 30 s gives the median run time.
    const done = await finishNewest('ppc64le', 30);
    await redis.zrem(keys.jobsByState('queued'), done);
    await new Promise((r) => setTimeout(r, 100));
    const res = await app.inject({ method: 'GET', url: '/v1/pools/ppc64le', headers: as(CI) });
    const p = res.json() as PoolBody;
    expect(p).toMatchObject({ waiting: 3, running: 2, healthyNodes: 1, freeSlots: 0 });
    expect(p.oldestWaitingSeconds).toBeGreaterThanOrEqual(0.1);
    // 3 waiting + this one over 2 slots, 30 s each: 60 s.
    expect(p).toMatchObject({ estimatedWaitSeconds: 60, estimate: { basis: 'queue' } });
  });
});

describe('pool status reads', () => {
  /** HMGETs Redis has run (the median reads one per recent job of the arch). */
  const hmgets = async () =>
    Number(/cmdstat_hmget:calls=(\d+)/.exec(String(await redis.info('commandstats')))?.[1] ?? 0);

  it("reuse an arch's median run time for medianCacheMs, shared by concurrent polls, then read it again", async () => {
    let t = Date.now();
    const status = createPoolStatus({ redis, keys, queue, nodes, pools, now: () => t, medianCacheMs: 5000 });
    await submitJobs('arm64', 5);
    const done = await finishNewest('arm64', 20);
    const before = await hmgets();
    // 20 polls at once (20 followers of queued jobs): one read of the 5 records.
    const first = await Promise.all([
      ...Array.from({ length: 19 }, (_, i) => status.estimateAt('arm64', i + 1)),
      status.read('arm64'),
    ]);
    expect(first.at(-1)).toMatchObject({ medianDurationMs: 20_000 });
    expect((await hmgets()) - before).toBe(5);
    t += 4000;
    await status.estimateAt('arm64', 1);
    await status.read('arm64');
    expect((await hmgets()) - before).toBe(5);
    // Past the cache: a job that finished meanwhile counts.
    await redis.hset(keys.job(done), { finishedAt: '2026-01-01T00:01:00.000Z' });
    t += 1001;
    const later = await status.read('arm64');
    expect((await hmgets()) - before).toBe(10);
    expect(later).toMatchObject({ medianDurationMs: 60_000 });
  });
});
