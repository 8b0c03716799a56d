import { randomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { createRetentionSweep, type JobQueue } from '../../queue/index.ts';
import type { ApiApp } from '../../src/api/index.ts';
import { createLogger, JobSpec, type JobSpecInput } from '../../src/core/index.ts';
import { startCluster, type TestCluster } from '../support/cluster.ts';
import { checkLeftovers } from '../support/leak-check.ts';
import { startTestApi, type TestApi } from '../support/test-api.ts';
import { eventually } from '../support/test-host.ts';

// Issue 9, point 9: job records expire with their logs, and secrets do not outlive the job.
const TOKEN = `admin-${randomBytes(12).toString('hex')}`;
const SECRET = `s3cr3t-${randomBytes(16).toString('hex')}`;
let c: TestCluster;
/** A queue on the same Redis and keys whose finished jobs are kept 1 s only. */
let short: JobQueue;
let app: ApiApp;
let api: TestApi;

beforeAll(async () => {
  c = await startCluster();
  await c.addWorker('amd64', { slots: 2, warm: 0 });
  api = await startTestApi({
    name: 'retention',
    env: { ARCHWAY_TOKEN: TOKEN },
    redis: { url: c.redis.url, client: c.client, keys: c.keys },
    logRetentionSeconds: 1,
  });
  ({ app, queue: short } = api);
});
checkLeftovers('all', async () => {
  await api?.close();
  await c?.close();
});

/** Every byte Redis holds for a job's record, as one string. */
const rawRecord = async (id: string) => JSON.stringify(await c.client.hgetall(c.keys.job(id)));
const submitTo = async (q: JobQueue, spec: JobSpecInput) =>
  (await q.submit(JobSpec.parse(spec), { clientId: 'test' })).job.id;

describe('secrets are not kept past the end of the job', () => {
  it('a job that ran had its secret (masked in the log); once it passed, the record holds only the name', async () => {
    const id = await c.submit({
      arch: 'amd64',
      image: 'busybox',
      secrets: { TOKEN: SECRET },
      // Masked to [secure] in the log only when the job printed the real value.
      script: 'echo "the job has its secret: $TOKEN"',
    });
    const job = await c.waitFinal(id);
    const log = await c.log(id);
    expect(job, log).toMatchObject({ state: 'passed' });
    expect(log).toContain('the job has its secret: [secure]\n');
    expect(job.spec.secrets).toEqual({ TOKEN: '[secure]' });
    expect(await rawRecord(id)).not.toContain(SECRET);
    const raw = JSON.parse(await rawRecord(id)) as Record<string, string>;
    expect(raw.secrets).toBeUndefined();
    expect(JSON.parse(raw.spec ?? '{}').secrets).toEqual({ TOKEN: '[secure]' });
  });

  it('a retried attempt still has them while the job is not final; errored after the last attempt drops them', async () => {
    // No ppc64le worker: the test plays the attempts through the state machine.
    const id = await submitTo(c.queue, {
      arch: 'ppc64le',
      image: 'busybox',
      script: 'true',
      secrets: { TOKEN: SECRET },
    });
    expect(await rawRecord(id)).toContain(SECRET);
    expect(await c.queue.store.transition(id, 'running', { newAttempt: true })).toMatchObject({ ok: true });
    expect(await c.queue.store.transition(id, 'queued')).toMatchObject({ ok: true }); // errored attempt, retried
    expect((await c.queue.get(id))?.spec.secrets).toEqual({ TOKEN: SECRET });
    expect(await c.queue.store.transition(id, 'running', { newAttempt: true })).toMatchObject({ ok: true });
    expect((await c.queue.get(id))?.spec.secrets).toEqual({ TOKEN: SECRET });
    expect(await c.queue.store.transition(id, 'errored', { fields: { reason: 'infra' } })).toMatchObject({
      ok: true,
    });
    expect(await rawRecord(id)).not.toContain(SECRET);
    expect((await c.queue.get(id))?.spec.secrets).toEqual({ TOKEN: '[secure]' });
  });

  it('canceled while queued drops them too', async () => {
    const id = await submitTo(c.queue, {
      arch: 's390x',
      image: 'busybox',
      script: 'true',
      secrets: { A: SECRET },
    });
    await c.queue.cancel(id);
    expect((await c.queue.get(id))?.state).toBe('canceled');
    expect(await rawRecord(id)).not.toContain(SECRET);
  });
});

describe('finished jobs expire with their logs, index entries included', () => {
  const label = `run=${randomBytes(4).toString('hex')}`;
  const [lk, lv] = label.split('=') as [string, string];
  const list = async (query: string) =>
    (
      await app.inject({
        method: 'GET',
        url: `/v1/jobs?${query}`,
        headers: { authorization: `Bearer ${TOKEN}` },
      })
    ).json().jobs as { id: string }[];

  it('a canceled job leaves GET /v1/jobs, its label index, its arch and state sets and its log; a waiting one stays', async () => {
    const gone = await submitTo(short, {
      arch: 'arm64',
      image: 'busybox',
      script: 'true',
      labels: { [lk]: lv, only: 'gone' },
    });
    const waiting = await submitTo(short, {
      arch: 'arm64',
      image: 'busybox',
      script: 'true',
      labels: { [lk]: lv },
    });
    await short.cancel(gone);
    expect((await list(`label=${label}`)).map((j) => j.id).sort()).toEqual([gone, waiting].sort());
    expect(await c.client.exists(c.keys.log(gone))).toBe(1);

    // The record's expiry is the end plus the retention (1 s here): wait until it has passed, then sweep.
    const expiresAt = Number(await c.client.zscore(c.keys.jobsExpiry, gone));
    expect(expiresAt).toBeGreaterThan(Date.now() - 5000);
    await eventually(() => Date.now() > expiresAt + 10, 'the retention to pass', 10_000);
    const sweep = createRetentionSweep({
      store: short.store,
      logger: createLogger({ name: 't', level: 'silent' }),
    });
    expect(await sweep.sweep()).toBeGreaterThanOrEqual(1);
    await sweep.close();

    expect(await c.client.exists(c.keys.job(gone))).toBe(0);
    expect(await c.queue.get(gone)).toBeUndefined();
    expect((await list(`label=${label}`)).map((j) => j.id)).toEqual([waiting]);
    expect((await list('state=canceled&limit=100')).map((j) => j.id)).not.toContain(gone);
    expect((await list('arch=arm64&limit=100')).map((j) => j.id)).not.toContain(gone);
    for (const key of [c.keys.jobsByLabel('only', 'gone'), c.keys.jobsExpiry, c.keys.jobsByState('canceled')])
      expect(await c.client.zscore(key, gone)).toBeNull();
    expect(await c.client.exists(c.keys.jobsByLabel('only', 'gone'))).toBe(0);
    await eventually(async () => (await c.client.exists(c.keys.log(gone))) === 0, 'the log to expire');
    expect(await c.client.exists(c.keys.job(waiting))).toBe(1);
  });

  it('jobs that finished before records expired are given their expiry, and lose their secrets', async () => {
    /** Makes a finished job as records were written before: secrets in the spec, no expiry, any number of labels. */
    const oldStyle = async (finishedAt: number) => {
      const id = await submitTo(short, {
        arch: 'arm64',
        image: 'busybox',
        script: 'true',
        secrets: { K: SECRET },
      });
      await short.cancel(id);
      const spec = JSON.parse((await c.client.hget(c.keys.job(id), 'spec')) ?? '{}');
      const labels = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`l${i}`, 'v']));
      await c.client
        .multi()
        .hset(c.keys.job(id), {
          spec: JSON.stringify({ ...spec, secrets: { K: SECRET }, labels }),
          labels: JSON.stringify(labels),
          finishedAt: new Date(finishedAt).toISOString(),
        })
        .zrem(c.keys.jobsExpiry, id)
        .exec();
      return id;
    };
    const long = await oldStyle(Date.now() - 3_600_000);
    const recentEnd = Date.now() + 60_000;
    const recent = await oldStyle(recentEnd);
    expect(await rawRecord(recent)).toContain(SECRET);
    // Such a record still reads (40 labels is over today's cap) and is listed.
    expect((await c.queue.get(recent))?.labels).toHaveProperty('l39');
    expect((await list('state=canceled&limit=100')).map((j) => j.id)).toContain(recent);

    const sweep = createRetentionSweep({
      store: short.store,
      logger: createLogger({ name: 't', level: 'silent' }),
    });
    await sweep.sweep();
    await sweep.close();
    // The one that ended an hour ago was past its retention: gone. The other now has its expiry.
    expect(await c.client.exists(c.keys.job(long))).toBe(0);
    expect(await rawRecord(recent)).not.toContain(SECRET);
    expect((await c.queue.get(recent))?.spec.secrets).toEqual({ K: '[secure]' });
    // Its end plus the retention (1 s here).
    expect(Number(await c.client.zscore(c.keys.jobsExpiry, recent))).toBe(recentEnd + 1000);
  });

  it('a job that ran is given its expiry when it ends, from the retention setting', async () => {
    const id = await c.submit({ arch: 'amd64', image: 'busybox', script: 'echo ran' });
    const job = await c.waitFinal(id);
    const expiresAt = Number(await c.client.zscore(c.keys.jobsExpiry, id));
    // startCluster's worker and queue keep finished jobs 600 s.
    expect(expiresAt - Date.parse(job.finishedAt ?? '')).toBeGreaterThan(590_000);
    expect(expiresAt - Date.parse(job.finishedAt ?? '')).toBeLessThan(610_000);
    // The worker closes the log (and sets its expiry) just after it records the final state.
    await eventually(async () => (await c.client.ttl(c.keys.log(id))) > 500, "the log's expiry");
  });
});
