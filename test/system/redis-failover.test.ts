import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ApiProcess, runApi } from '../../src/api/index.ts';
import { FINAL_STATES } from '../../src/core/index.ts';
import { startCluster, type TestCluster } from '../support/cluster.ts';
import { startSentinel, type TestSentinel } from '../support/redis-sentinel.ts';
import { eventually, leftovers } from '../support/test-host.ts';

/**
 * Redis's own high availability: a primary and a replica under Sentinel. The primary is killed
 * while jobs run; the queue client, the workers and the API reconnect through the sentinel to the
 * promoted replica, and every job finishes, once.
 */
// Ports of this suite's own range (the machine is shared).
const PORTS = { primary: 26_110, replica: 26_111, sentinel: 26_120 };
const token = randomBytes(16).toString('hex');

let sentinel: TestSentinel;
let c: TestCluster;
let api: ApiProcess;

beforeAll(async () => {
  sentinel = await startSentinel(PORTS);
  c = await startCluster({ redis: sentinel });
  await c.addWorker('amd64', { slots: 2 });
  await c.addWorker('amd64', { slots: 2 });
  api = await runApi(
    {
      REDIS_URL: sentinel.url,
      ARCHWAY_REDIS_PREFIX: c.keys.prefix,
      ARCHWAY_TOKEN: token,
      ARCHWAY_PORT: '0',
      ARCHWAY_LOG_LEVEL: 'silent',
    },
    { handleSignals: false },
  );
}, 120_000);

afterAll(async () => {
  await api?.close();
  await c?.close();
  expect(await leftovers()).toEqual([]);
});

describe('Redis Sentinel failover', () => {
  it('the primary killed while jobs run: clients follow the promoted replica, no job is lost or finished twice', async () => {
    const n = 12;
    const ids: string[] = [];
    for (let i = 0; i < n; i++)
      ids.push(
        await c.submit({ arch: 'amd64', image: 'busybox', script: `echo job ${i}; sleep 2; echo end ${i}` }),
      );
    await eventually(
      async () => (await Promise.all(ids.map((id) => c.queue.get(id)))).some((j) => j?.state === 'running'),
      'jobs to run',
      30_000,
    );
    const killedAt = new Date().toISOString();
    const old = await sentinel.killPrimary();
    expect(old).toBe(PORTS.primary);
    await eventually(
      async () => (await sentinel.primaryPort()) === PORTS.replica,
      'the replica promoted',
      30_000,
    );
    const promotedAt = new Date().toISOString();

    // Submitted through the API after the failover: it reconnected too.
    let late = '';
    await eventually(
      async () => {
        const r = await fetch(`${api.url}/v1/jobs`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ arch: 'amd64', image: 'busybox', script: 'echo after the failover' }),
        }).catch(() => undefined);
        if (r?.ok) late = ((await r.json()) as { job: { id: string } }).job.id;
        return late !== '';
      },
      'the API to take a job after the failover',
      30_000,
    );
    ids.push(late);

    const jobs = [];
    for (const id of ids) jobs.push(await c.waitFinal(id, 120_000));
    // None lost: every job reached a final state, and passed.
    expect(jobs.map((j) => j.state)).toEqual(ids.map(() => 'passed'));
    // None finished twice: one passed attempt each, one transition into a final state each.
    // Not re-run either: the running ones waited through the failover instead of losing their lock.
    expect(jobs.map((j) => j.attempts.length)).toEqual(ids.map(() => 1));
    for (const j of jobs)
      expect(
        j.attempts.filter((a) => a.outcome === 'passed'),
        `killed ${killedAt}, promoted ${promotedAt}: ${JSON.stringify(jobs.map((x) => [x.startedAt, x.finishedAt, x.attempts]))}`,
      ).toHaveLength(1);
    const events = await c.client.xrange(c.keys.events, '-', '+');
    for (const id of ids) {
      const finals = events.filter(([, f]) => f[1] === id && FINAL_STATES.includes((f[5] ?? '') as never));
      expect(finals, `${id}: ${JSON.stringify(events.filter(([, f]) => f[1] === id))}`).toHaveLength(1);
    }
    expect(await c.log(late)).toContain('after the failover');
    const ready = await fetch(`${api.url}/readyz`);
    expect(ready.status).toBe(200);
  }, 240_000);
});
