import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createConcurrencyLimits, createJobStore, type JobStore } from '../../queue/index.ts';
import {
  type Arch,
  createKeys,
  createRedis,
  type JobRecord,
  JobSpec,
  type Keys,
} from '../../src/core/index.ts';
import { startCluster, type TestCluster } from '../support/cluster.ts';
import { checkLeftovers } from '../support/leak-check.ts';
import { startRedis, type TestRedis } from '../support/redis-server.ts';
import { startTestApi, type TestApi } from '../support/test-api.ts';
import { eventually } from '../support/test-host.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('concurrency caps in Redis (the scripts alone)', () => {
  let server: TestRedis;
  let redis: Redis;
  let keys: Keys;
  let store: JobStore;
  beforeAll(async () => {
    server = await startRedis();
    redis = createRedis({ url: server.url, name: 'test-limits' });
    redis.on('error', () => undefined);
  });
  afterAll(async () => {
    redis.disconnect();
    await server.stop();
  });
  const fresh = () => {
    keys = createKeys(`lim${randomBytes(3).toString('hex')}`);
    store = createJobStore(redis, keys, { retentionSeconds: 60 });
  };
  async function job(labels: Record<string, string>, arch: Arch = 'amd64') {
    const id = `j${randomBytes(6).toString('hex')}`;
    await store.create(id, JobSpec.parse({ arch, image: 'busybox', script: 'true', labels }), {
      warnings: [],
      specHash: 'x',
    });
    return { id, arch, labels };
  }

  it('one slot per repository: the second waits in line, the other repository does not; a release lets the first in line in', async () => {
    fresh();
    const limits = createConcurrencyLimits(redis, keys);
    await limits.setDefault(1);
    const a1 = await job({ repo: 'o/a' });
    const a2 = await job({ repo: 'o/a' });
    const a3 = await job({ repo: 'o/a' });
    const b1 = await job({ repo: 'o/b' });
    const free = await job({});
    expect(await limits.acquire(a1)).toEqual({ granted: true, groups: ['repo=o/a'] });
    const held = await limits.acquire(a2);
    expect(held).toMatchObject({ granted: false, group: 'repo=o/a', running: 1, cap: 1, ahead: 0 });
    expect(held.granted ? '' : held.message).toBe('repository o/a has 1 of 1 job running');
    expect(await limits.acquire(a3)).toMatchObject({ granted: false, ahead: 1 });
    // Another repository, and a job with no repository (uncapped), are not behind o/a's line.
    expect(await limits.acquire(b1)).toEqual({ granted: true, groups: ['repo=o/b'] });
    expect(await limits.acquire(free)).toEqual({ granted: true, groups: [] });
    expect((await limits.held('amd64')).sort()).toEqual([a2.id, a3.id].sort());
    // The same job asking again (a retry, a lost node's re-run) keeps its slot, counted once.
    expect(await limits.acquire(a1)).toMatchObject({ granted: true });
    expect(await limits.status('repo=o/a')).toEqual({ group: 'repo=o/a', running: 1, waiting: 2 });
    // Repositories under the default cap are listed while they run or wait.
    expect(await limits.list()).toEqual([
      { group: 'repo=o/a', running: 1, waiting: 2 },
      { group: 'repo=o/b', running: 1, waiting: 0 },
    ]);
    // a1 ends: the first in line (a2) is woken, and a3 may not jump it.
    expect(await limits.release(a1.id, ['repo=o/a'])).toEqual([{ arch: 'amd64', id: a2.id }]);
    expect(await limits.acquire(a3)).toMatchObject({ granted: false, ahead: 1 });
    expect(await limits.acquire(a2)).toMatchObject({ granted: true });
    expect(await limits.held('amd64')).toEqual([a3.id]);
  });

  it('a per-repository cap overrides the default, a label cap adds to it, and a job runs only when every cap has room', async () => {
    fresh();
    const limits = createConcurrencyLimits(redis, keys);
    await limits.setDefault(1);
    await limits.set('repo=o/big', 2);
    await limits.set('team=infra', 1);
    const x = await job({ repo: 'o/big' });
    const y = await job({ repo: 'o/big', team: 'infra' });
    const z = await job({ repo: 'o/big' });
    expect(await limits.acquire(x)).toMatchObject({ granted: true });
    expect(await limits.acquire(y)).toEqual({ granted: true, groups: ['repo=o/big', 'team=infra'] });
    const held = await limits.acquire(z);
    expect(held.granted ? '' : held.message).toBe('repository o/big has 2 of 2 jobs running');
    const t = await job({ team: 'infra', repo: 'o/other' });
    const ht = await limits.acquire(t);
    expect(ht.granted ? '' : ht.message).toBe('label team=infra has 1 of 1 job running');
    // Held on the label, it holds no slot of its repository.
    expect((await limits.status('repo=o/other')).running).toBe(0);
    // Removing the label's cap lets its line in at once (the wake-up returns it).
    await limits.set('team=infra', null);
    expect(await limits.wake(['team=infra'])).toEqual([{ arch: 'amd64', id: t.id }]);
    expect(await limits.acquire(t)).toMatchObject({ granted: true, groups: ['repo=o/other'] });
    // Listed: a group with its own cap, or jobs running or held (y still holds its team=infra slot).
    expect((await limits.list()).map((g) => g.group)).toEqual(['repo=o/big', 'repo=o/other', 'team=infra']);
  });

  it('a slot whose holder stopped renewing (its node died) frees when its lease ends; a renewed one does not', async () => {
    fresh();
    const limits = createConcurrencyLimits(redis, keys, { leaseMs: 600 });
    await limits.set('repo=o/a', 1);
    const dead = await job({ repo: 'o/a' });
    const next = await job({ repo: 'o/a' });
    expect(await limits.acquire(dead)).toMatchObject({ granted: true });
    expect(await limits.acquire(next)).toMatchObject({ granted: false });
    await sleep(300);
    await limits.renew(dead.id, ['repo=o/a']);
    await sleep(400);
    // Renewed 400 ms ago with a 600 ms lease: still held.
    expect(await limits.acquire(next)).toMatchObject({ granted: false });
    expect(await limits.wake()).toEqual([]);
    await sleep(700);
    // No renewal for 1.1 s: the control plane's wake-up finds the slot free and wakes the line.
    expect(await limits.wake()).toEqual([{ arch: 'amd64', id: next.id }]);
    expect(await limits.acquire(next)).toMatchObject({ granted: true });
  });

  // The suite's cluster mode does not restart its cluster (test/support/redis-cluster.ts).
  it.skipIf(process.env.ARCHWAY_TEST_REDIS === 'cluster')(
    'the count survives a Redis restart (AOF)',
    async () => {
      fresh();
      const limits = createConcurrencyLimits(redis, keys);
      await limits.set('repo=o/a', 1);
      const a = await job({ repo: 'o/a' });
      const b = await job({ repo: 'o/a' });
      expect(await limits.acquire(a)).toMatchObject({ granted: true });
      expect(await limits.acquire(b)).toMatchObject({ granted: false });
      await server.restart();
      await eventually(async () => (await redis.ping().catch(() => '')) === 'PONG', 'Redis back', 10_000);
      expect(await limits.acquire(b)).toMatchObject({ granted: false, running: 1 });
      expect(await limits.release(a.id, ['repo=o/a'])).toEqual([{ arch: 'amd64', id: b.id }]);
    },
  );

  it("the held job's record says why it waits; the next slot it takes clears it", async () => {
    fresh();
    const limits = createConcurrencyLimits(redis, keys);
    await limits.set('repo=o/a', 1);
    const a = await job({ repo: 'o/a' });
    const b = await job({ repo: 'o/a' });
    await limits.acquire(a);
    const h = await limits.acquire(b);
    if (h.granted) throw new Error('b should be held');
    await limits.noteHeld(b.id, h.message);
    expect((await store.get(b.id))?.waitReason).toBe('repository o/a has 1 of 1 job running');
    await limits.release(a.id, ['repo=o/a']);
    await limits.acquire(b);
    expect((await store.get(b.id))?.waitReason).toBeUndefined();
  });
});

let c: TestCluster | undefined;
let api: TestApi | undefined;
checkLeftovers('each', async () => {
  await api?.close();
  api = undefined;
  await c?.close();
  c = undefined;
});

/** Pairs of jobs whose runs (first start to end) overlap. */
function overlaps(jobs: JobRecord[]): [string, string][] {
  const out: [string, string][] = [];
  for (const [i, a] of jobs.entries())
    for (const b of jobs.slice(i + 1)) {
      const [as, ae] = [Date.parse(a.startedAt ?? ''), Date.parse(a.finishedAt ?? '')];
      const [bs, be] = [Date.parse(b.startedAt ?? ''), Date.parse(b.finishedAt ?? '')];
      if (as < be && bs < ae) out.push([a.id, b.id]);
    }
  return out;
}

describe('concurrency caps on real workers', () => {
  it('two repositories with a cap of 1: never two jobs of one repository at once, the other is not behind its line, each job runs once', async () => {
    c = await startCluster();
    const cluster = c;
    // 4 slots on two nodes: room for everything but the cap.
    await cluster.addWorker('amd64', { slots: 2 });
    await cluster.addWorker('amd64', { slots: 2 });
    api = await startTestApi({
      name: 'limits',
      redis: { url: cluster.redis.url, client: cluster.client, keys: cluster.keys },
    });
    const put = (repo: string, concurrency: number | null) =>
      api?.app.inject({
        method: 'PUT',
        url: `/v1/repos/${repo}/limits`,
        headers: { authorization: `Bearer ${api.token}` },
        payload: { concurrency },
      });
    for (const repo of ['o/one', 'o/two']) {
      const r = await put(repo, 1);
      expect(r?.statusCode).toBe(200);
      expect(r?.json()).toEqual({ group: `repo=${repo}`, concurrency: 1, own: true, running: 0, waiting: 0 });
    }
    const script = 'echo start; sleep 2; echo end';
    const one: string[] = [];
    for (let i = 0; i < 4; i++)
      one.push(await cluster.submit({ arch: 'amd64', image: 'busybox', script, labels: { repo: 'o/one' } }));
    // Submitted after o/one's whole line: it must not wait behind it.
    const two: string[] = [];
    for (let i = 0; i < 2; i++)
      two.push(await cluster.submit({ arch: 'amd64', image: 'busybox', script, labels: { repo: 'o/two' } }));

    // While o/one's line waits, a held job says why, and the pool does not count it as waiting for a slot.
    await eventually(
      async () => {
        const held = await Promise.all(one.map((id) => cluster.queue.get(id)));
        return held.some((j) => j?.waitReason === 'repository o/one has 1 of 1 job running');
      },
      'a held job of o/one to say why it waits',
      20_000,
    );
    const pools = await api.app.inject({
      method: 'GET',
      url: '/v1/pools/amd64',
      headers: { authorization: `Bearer ${api.token}` },
    });
    expect(pools.json().held).toBeGreaterThanOrEqual(1);
    const status = await api.app.inject({
      method: 'GET',
      url: '/v1/repos/o/one/limits',
      headers: { authorization: `Bearer ${api.token}` },
    });
    expect(status.json()).toMatchObject({ concurrency: 1, running: 1 });
    expect(status.json().waiting).toBeGreaterThanOrEqual(1);

    const jobsOne = await Promise.all(one.map((id) => cluster.waitFinal(id, 90_000)));
    const jobsTwo = await Promise.all(two.map((id) => cluster.waitFinal(id, 90_000)));
    for (const j of [...jobsOne, ...jobsTwo]) {
      expect(j.state).toBe('passed');
      // Ran once: one attempt, and one move from queued to running in the events stream.
      expect(j.attempts).toHaveLength(1);
      expect(j.waitReason).toBeUndefined();
    }
    const events = await cluster.client.xrange(cluster.keys.events, '-', '+');
    for (const id of [...one, ...two])
      expect(events.filter(([, f]) => f[1] === id && f[3] === 'queued' && f[5] === 'running')).toHaveLength(
        1,
      );
    expect(overlaps(jobsOne)).toEqual([]);
    expect(overlaps(jobsTwo)).toEqual([]);
    // o/two's first job started before o/one's second: it did not wait for o/one's line.
    const starts = (js: JobRecord[]) => js.map((j) => Date.parse(j.startedAt ?? '')).sort((a, b) => a - b);
    const [oneFirst, oneSecond] = starts(jobsOne);
    const [twoFirst] = starts(jobsTwo);
    expect(twoFirst).toBeLessThan(oneSecond as number);
    // And o/one's line moved as each job ended (promoted, not left to its 30 s look-again).
    const ends = jobsOne.map((j) => Date.parse(j.finishedAt ?? '')).sort((a, b) => a - b);
    const next = starts(jobsOne).slice(1);
    for (const [i, s] of next.entries()) expect(s - (ends[i] as number)).toBeLessThan(10_000);
    expect(oneFirst).toBeDefined();
    // Nothing is left held or running in either group (a slot is freed just after the record is final).
    for (const repo of ['o/one', 'o/two']) {
      await eventually(
        async () => (await cluster.queue.limits.status(`repo=${repo}`)).running === 0,
        `${repo}'s slot to be freed`,
        10_000,
      );
      expect(await cluster.queue.limits.status(`repo=${repo}`)).toMatchObject({ running: 0, waiting: 0 });
    }
  }, 150_000);

  it('job show says why a held job waits; a canceled held job leaves the line; the API refuses a bad cap with the field at fault', async () => {
    c = await startCluster();
    const cluster = c;
    await cluster.addWorker('amd64', { slots: 2 });
    api = await startTestApi({
      name: 'limits',
      redis: { url: cluster.redis.url, client: cluster.client, keys: cluster.keys },
      listen: true,
    });
    const auth = { authorization: `Bearer ${api.token}` };
    for (const bad of [0, -1, 1.5, 'four', 10_001]) {
      const r = await api.app.inject({
        method: 'PUT',
        url: '/v1/repos/o/r/limits',
        headers: auth,
        payload: { concurrency: bad },
      });
      expect(r.statusCode).toBe(400);
      expect(r.body).toMatch(/concurrency/);
    }
    expect(await cluster.queue.limits.status('repo=o/r')).toEqual({
      group: 'repo=o/r',
      running: 0,
      waiting: 0,
    });
    const star = await api.app.inject({
      method: 'PUT',
      url: '/v1/labels/repo/*/limits',
      headers: auth,
      payload: { concurrency: 3 },
    });
    expect(star.statusCode).toBe(400);
    expect(star.body).toMatch(/ARCHWAY_REPO_CONCURRENCY/);
    const label = await api.app.inject({
      method: 'PUT',
      url: '/v1/labels/team/infra/limits',
      headers: auth,
      payload: { concurrency: 1 },
    });
    expect(label.json()).toMatchObject({ group: 'team=infra', concurrency: 1, own: true });

    const long = await cluster.submit({
      arch: 'amd64',
      image: 'busybox',
      script: 'sleep 30',
      labels: { team: 'infra' },
    });
    const held = await cluster.submit({
      arch: 'amd64',
      image: 'busybox',
      script: 'true',
      labels: { team: 'infra' },
    });
    await eventually(
      async () => (await cluster.queue.get(held))?.waitReason !== undefined,
      'the job to be held',
      20_000,
    );
    const cli = (args: string[]) =>
      execa('bin/archway', args, {
        env: {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          ARCHWAY_URL: api?.url ?? '',
          ARCHWAY_TOKEN: api?.token ?? '',
        },
        extendEnv: false,
        reject: false,
      });
    const show = await cli(['job', 'show', held]);
    expect(show.stdout).toMatch(/^waiting: +label team=infra has 1 of 1 job running$/m);
    // Held, it has no place in the line until a job of its group ends (issue #13).
    const shown = await api.app.inject({ method: 'GET', url: `/v1/jobs/${held}`, headers: auth });
    expect(shown.json().queue).toEqual({ status: 'held', of: 0 });
    expect(show.stdout).not.toMatch(/^queue:/m);
    const listed = await api.app.inject({ method: 'GET', url: '/v1/limits', headers: auth });
    expect(listed.json()).toEqual({
      repoDefault: null,
      groups: [{ group: 'team=infra', concurrency: 1, own: true, running: 1, waiting: 1 }],
    });
    await cluster.queue.cancel(held);
    expect(await cluster.queue.limits.status('team=infra')).toMatchObject({ running: 1, waiting: 0 });
    expect(await cluster.queue.limits.held('amd64')).toEqual([]);
    const table = await cli(['limits']);
    expect(table.stdout).toMatch(/^repositories' default: none/);
    expect(table.stdout).toMatch(/^team=infra +1 +1 +0$/m);
    const bad = await cli(['limits', 'set', 'team=infra', '0']);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/N: expected a number of jobs/);
    // Raising the cap (the CLI, through the API) is seen by the worker at once: a new job runs beside the long one.
    const raised = await cli(['limits', 'set', 'team=infra', '2']);
    expect(raised.exitCode).toBe(0);
    expect(raised.stdout).toMatch(/^team=infra +2 +1 +0$/m);
    const beside = await cluster.submit({
      arch: 'amd64',
      image: 'busybox',
      script: 'true',
      labels: { team: 'infra' },
    });
    expect((await cluster.waitFinal(beside, 30_000)).state).toBe('passed');
    expect((await cluster.queue.get(long))?.state).toBe('running');
    await cluster.queue.cancel(long);
    expect((await cluster.waitFinal(long, 30_000)).state).toBe('canceled');
    await eventually(
      async () => (await cluster.queue.limits.status('team=infra')).running === 0,
      'the canceled job to free its slot',
      10_000,
    );
  }, 120_000);
});
