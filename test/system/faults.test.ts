import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { createStallWatch, MAX_ATTEMPTS, SLOT_LEASE_MS, SLOT_RENEW_MS } from '../../queue/index.ts';
import { createLogger } from '../../src/core/index.ts';
import { startCluster, type TestCluster } from '../support/cluster.ts';
import { checkLeftovers } from '../support/leak-check.ts';
import { createTestHost, eventually, leftovers } from '../support/test-host.ts';
import { exited, workerProcesses } from '../support/worker-process.ts';

let c: TestCluster | undefined;
const workers = workerProcesses();
const spawnWorker = workers.spawn;

checkLeftovers('each', async () => {
  await workers.stopAll('SIGTERM');
  await c?.close();
  c = undefined;
});

describe('faults', () => {
  it('a worker SIGKILLed mid-job: the job re-runs on another node, finishes once, and no container is left', async () => {
    c = await startCluster();
    const cluster = c;
    const victim = spawnWorker(cluster, 'victim');
    const id = await cluster.submit({
      arch: 'amd64',
      image: 'busybox',
      script: 'echo started on $ARCHWAY_NODE; sleep 3; echo finished',
    });
    await eventually(
      async () => (await cluster.log(id)).includes('started on victim'),
      'the job to start on the victim',
      30_000,
    );
    victim.kill('SIGKILL');
    await exited(victim);
    // Its container is still on the host until a worker starts here again.
    expect((await leftovers()).some((l) => l.startsWith('jobs/'))).toBe(true);
    spawnWorker(cluster, 'rescuer');
    const job = await cluster.waitFinal(id, 80_000);
    expect(job.state).toBe('passed');
    expect(job.attempts.map((a) => [a.n, a.node, a.outcome])).toEqual([
      [1, 'victim', 'errored'],
      [2, 'rescuer', 'passed'],
    ]);
    const log = await cluster.log(id);
    expect(log).toContain('started on rescuer');
    expect(log).toMatch(/attempt 2/);
    // Finished once: exactly one transition into a final state.
    const events = await cluster.client.xrange(cluster.keys.events, '-', '+');
    const finals = events.filter(
      ([, f]) => f[1] === id && ['passed', 'failed', 'errored', 'canceled'].includes(f[5] ?? ''),
    );
    expect(finals).toHaveLength(1);
  }, 120_000);

  it('a worker SIGKILLed mid-job: its container still stops at the deadline with no worker, and the next start reaps it', async () => {
    c = await startCluster();
    const cluster = c;
    const victim = spawnWorker(cluster, 'victim');
    const id = await cluster.submit({
      arch: 'amd64',
      image: 'busybox',
      script: 'echo started; sleep 600',
      timeoutSeconds: 4,
    });
    await eventually(async () => (await cluster.log(id)).includes('started'), 'the job to start', 30_000);
    victim.kill('SIGKILL');
    await exited(victim);
    const left = await leftovers();
    const victimsContainer = left.filter((l) => l.startsWith('jobs/'));
    expect(victimsContainer).toHaveLength(1);
    expect(left.some((l) => / with processes /.test(l))).toBe(true);
    // No worker runs on the host now: the watcher alone ends the container's processes.
    await eventually(
      async () => !(await leftovers()).some((l) => / with processes /.test(l)),
      "the container's processes to be killed at the deadline",
      20_000,
    );
    // What stays (snapshot, bundle, runtime state) is the next start's to reap.
    expect(await leftovers()).toEqual(expect.arrayContaining(victimsContainer));
    spawnWorker(cluster, 'rescuer');
    await eventually(
      async () => !(await leftovers()).some((l) => victimsContainer.includes(l)),
      'the next worker to reap the container',
      30_000,
    );
    await cluster.waitFinal(id, 80_000);
  }, 120_000);

  it('the control plane re-queues the job of a lost node even when no node of its arch is left', async () => {
    c = await startCluster();
    const cluster = c;
    const watch = createStallWatch({
      queue: cluster.queue,
      keys: cluster.keys,
      redis: cluster.client,
      duplicate: () => new Redis(cluster.redis.url, { maxRetriesPerRequest: null }),
      maxStalledCount: MAX_ATTEMPTS - 1,
      logRetentionSeconds: 600,
      logger: createLogger({ name: 'test-stall-watch', level: 'silent' }),
    });
    await watch.start();
    try {
      const only = spawnWorker(cluster, 'only-amd64');
      const id = await cluster.submit({ arch: 'amd64', image: 'busybox', script: 'echo started; sleep 120' });
      await eventually(async () => (await cluster.log(id)).includes('started'), 'the job to start', 30_000);
      only.kill('SIGKILL');
      await exited(only);
      await eventually(
        async () => (await cluster.queue.get(id))?.state === 'queued',
        'the job to be queued again',
        60_000,
      );
      const job = await cluster.queue.get(id);
      expect(job?.attempts[0]).toMatchObject({
        n: 1,
        node: 'only-amd64',
        outcome: 'errored',
        reason: 'infra',
      });
      expect(await cluster.log(id)).toMatch(
        /node only-amd64 was lost during attempt 1; the job is queued again/,
      );
      expect(await cluster.queue.depth('amd64')).toBe(1);
      await cluster.queue.cancel(id);
      // The dead node's container goes when a runtime starts on this host again.
      await (await createTestHost('amd64')).runtime.reap({});
    } finally {
      await watch.close();
    }
  }, 120_000);

  it('Redis restarted mid-job (AOF): the job is not lost, its log is complete, the worker reconnects by itself', async () => {
    c = await startCluster();
    const cluster = c;
    await cluster.addWorker('amd64', { slots: 1 });
    const id = await cluster.submit({
      arch: 'amd64',
      image: 'busybox',
      script: 'for i in 1 2 3 4 5 6 7 8; do echo line-$i; sleep 0.3; done',
    });
    await eventually(async () => (await cluster.log(id)).includes('line-2'), 'the job to print');
    await cluster.redis.restart({ downMs: 1000 });
    const job = await cluster.waitFinal(id);
    expect(job.state).toBe('passed');
    const log = await cluster.log(id);
    for (let i = 1; i <= 8; i++) expect(log).toContain(`line-${i}\n`);
    // The node takes new jobs after the restart.
    const next = await cluster.submit({ arch: 'amd64', image: 'busybox', script: 'echo after-restart' });
    expect((await cluster.waitFinal(next)).state).toBe('passed');
  }, 90_000);

  it("a worker SIGKILLed while its job holds its repository's only slot: the slot frees when its lease ends, not never", async () => {
    c = await startCluster();
    const cluster = c;
    await cluster.queue.limits.set('repo=o/k', 1);
    // The repository's jobs on two arches: the victim's arm64 job is not re-run while it is away
    // (no arm64 node, no control plane), so only the lease can free the slot for the amd64 job.
    const victim = spawnWorker(cluster, 'victim', 'arm64');
    const first = await cluster.submit({
      arch: 'arm64',
      image: 'busybox',
      script: '[ "$ARCHWAY_ATTEMPT" = 1 ] && { echo started; sleep 600; }; echo re-run',
      labels: { repo: 'o/k' },
    });
    await eventually(
      async () => (await cluster.log(first)).includes('started'),
      'the first job to start',
      60_000,
    );
    await cluster.addWorker('amd64', { slots: 2 });
    const second = await cluster.submit({
      arch: 'amd64',
      image: 'busybox',
      script: 'echo second; sleep 20',
      labels: { repo: 'o/k' },
    });
    await eventually(
      async () => (await cluster.queue.get(second))?.waitReason === 'repository o/k has 1 of 1 job running',
      'the second job to be held',
      20_000,
    );
    victim.kill('SIGKILL');
    await exited(victim);
    const killedAt = Date.now();
    await eventually(
      async () => (await cluster.queue.get(second))?.state === 'running',
      'the second job to start once the slot is free',
      90_000,
    );
    const started = await cluster.queue.get(second);
    const waited = Date.parse(started?.startedAt ?? '') - killedAt;
    // Not before the lease of the last renewal ran out; and well before "never".
    expect(waited).toBeGreaterThanOrEqual(SLOT_LEASE_MS - SLOT_RENEW_MS - 1000);
    expect(waited).toBeLessThan(SLOT_LEASE_MS + 45_000);
    expect((await cluster.queue.get(first))?.state).toBe('running');
    // An arm64 node comes back while the second job holds the slot: it reaps the dead one's
    // container; the first job, taken from the lost node, waits for the slot as queued.
    spawnWorker(cluster, 'rescuer', 'arm64');
    await eventually(
      async () => {
        const j = await cluster.queue.get(first);
        return j?.state === 'queued' && j.waitReason === 'repository o/k has 1 of 1 job running';
      },
      'the lost job to wait for its slot, queued',
      60_000,
    );
    expect((await cluster.queue.get(first))?.attempts[0]).toMatchObject({
      node: 'victim',
      outcome: 'errored',
    });
    expect((await cluster.waitFinal(second, 60_000)).state).toBe('passed');
    // Then it re-runs, once.
    const rerun = await cluster.waitFinal(first, 120_000);
    expect(rerun.state).toBe('passed');
    expect(rerun.attempts.map((a) => [a.n, a.node, a.outcome])).toEqual([
      [1, 'victim', 'errored'],
      [2, 'rescuer', 'passed'],
    ]);
    // The slot is freed just after the record is final.
    await eventually(
      async () => (await cluster.queue.limits.status('repo=o/k')).running === 0,
      'the slot to be freed',
      10_000,
    );
    expect(await cluster.queue.limits.status('repo=o/k')).toMatchObject({ running: 0, waiting: 0 });
  }, 240_000);
});
