import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { createNodeRegistry } from '../../queue/index.ts';
import { startCluster, type TestCluster } from '../support/cluster.ts';
import { checkLeftovers } from '../support/leak-check.ts';
import { eventually, TEST_ENV } from '../support/test-host.ts';

let c: TestCluster | undefined;
checkLeftovers('each', async () => {
  await c?.close();
  c = undefined;
});

describe('membership', () => {
  it('registers each node with its arch, emulation and slots, and heartbeats by Redis time', async () => {
    c = await startCluster();
    await c.addWorker('s390x', { slots: 3 });
    const nodes = createNodeRegistry(c.client, c.keys);
    const [n] = await nodes.list();
    expect(n).toMatchObject({
      arch: 's390x',
      emulated: true,
      slots: 3,
      busy: 0,
      state: 'active',
      lost: false,
      drainRequested: false,
    });
    const seen = n?.lastSeen ?? 0;
    await eventually(async () => ((await nodes.list())[0]?.lastSeen ?? 0) > seen, 'a second heartbeat', 5000);
  });

  it('a SIGKILLed worker process is lost after 10 s without a heartbeat, by Redis time', async () => {
    c = await startCluster();
    const cluster = c;
    const child = spawn('bin/archway', ['worker', '--arch', 'ppc64le', '--slots', '1', '--warm', '0'], {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        ...TEST_ENV,
        REDIS_URL: cluster.redis.url,
        ARCHWAY_REDIS_PREFIX: cluster.keys.prefix,
        ARCHWAY_NODE_ID: 'doomed',
      },
      stdio: 'ignore',
    });
    const nodes = createNodeRegistry(cluster.client, cluster.keys);
    await eventually(async () => (await nodes.get('doomed'))?.lost === false, 'the node to register', 30_000);
    expect((await nodes.live('ppc64le')).map((n) => n.id)).toEqual(['doomed']);
    const killedAt = Date.now();
    child.kill('SIGKILL');
    await eventually(async () => (await nodes.get('doomed'))?.lost === true, 'the node to be lost', 20_000);
    // Not before its 10 s of silence (one heartbeat may have gone out just before the kill).
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual(7_500);
    expect(await nodes.live('ppc64le')).toEqual([]);
  }, 60_000);

  it('drain: the node finishes its running job, takes no new one, deregisters and stops', async () => {
    c = await startCluster();
    const cluster = c;
    const node = await cluster.addWorker('amd64', { slots: 1 });
    const nodes = createNodeRegistry(cluster.client, cluster.keys);
    const id = await cluster.submit({
      arch: 'amd64',
      image: 'busybox',
      script: 'echo begin; sleep 2; echo end',
    });
    await eventually(async () => (await cluster.log(id)).includes('begin'), 'the job to start');
    const [info] = await nodes.list();
    expect(await nodes.requestDrain(info?.id ?? '', true)).toBe(true);
    await eventually(() => node.state === 'draining', 'the node to drain', 3000);
    const later = await cluster.submit({ arch: 'amd64', image: 'busybox', script: 'echo later' });
    expect((await cluster.waitFinal(id)).state).toBe('passed');
    await node.stopped;
    expect(await nodes.list()).toEqual([]);
    expect((await cluster.queue.get(later))?.state).toBe('queued');
    await cluster.queue.cancel(later);
  });

  it('drain: once the drain call returns, the node takes no new job, not even into a free slot', async () => {
    c = await startCluster();
    const cluster = c;
    // Two slots, one busy: the free slot's fetch is blocking in Redis when the drain comes, and
    // BullMQ hands it the next job although the worker is paused by then.
    const node = await cluster.addWorker('amd64', { slots: 2 });
    const nodes = createNodeRegistry(cluster.client, cluster.keys);
    const id = await cluster.submit({
      arch: 'amd64',
      image: 'busybox',
      script: 'echo begin; sleep 3; echo end',
    });
    await eventually(async () => (await cluster.log(id)).includes('begin'), 'the job to start');
    const nodeId = (await nodes.list())[0]?.id ?? '';
    expect(await nodes.requestDrain(nodeId, true)).toBe(true);
    // DRAINING as soon as the drain is asked for, not at the node's next heartbeat.
    expect((await nodes.get(nodeId))?.state).toBe('draining');
    expect(await nodes.live('amd64')).toEqual([]);
    const later = await cluster.submit({ arch: 'amd64', image: 'busybox', script: 'echo later' });
    expect((await cluster.waitFinal(id)).state).toBe('passed');
    await node.stopped;
    const waiting = await cluster.queue.get(later);
    expect(waiting?.state).toBe('queued');
    expect(waiting?.attempts).toEqual([]);
    // Put back without an attempt counted: the next node runs it.
    const other = await cluster.addWorker('amd64', { slots: 1 });
    expect(other).toBeDefined();
    const done = await cluster.waitFinal(later);
    expect(done.state).toBe('passed');
    expect(done.attempts.map((a) => a.node)).not.toContain(nodeId);
    expect(done.attempt).toBe(1);
  });

  it('undrain before it leaves: the node takes jobs again', async () => {
    c = await startCluster();
    const cluster = c;
    const node = await cluster.addWorker('amd64', { slots: 1 });
    const nodes = createNodeRegistry(cluster.client, cluster.keys);
    const id = await cluster.submit({ arch: 'amd64', image: 'busybox', script: 'sleep 2' });
    await eventually(async () => (await cluster.queue.get(id))?.state === 'running', 'the job to run');
    const nodeId = (await nodes.list())[0]?.id ?? '';
    await nodes.requestDrain(nodeId, true);
    await eventually(() => node.state === 'draining', 'draining', 3000);
    await nodes.requestDrain(nodeId, false);
    await eventually(() => node.state === 'active', 'active again', 3000);
    const next = await cluster.submit({ arch: 'amd64', image: 'busybox', script: 'echo again' });
    expect((await cluster.waitFinal(next)).state).toBe('passed');
  });

  it('quarantines a node whose last attempts all errored on the host', async () => {
    c = await startCluster();
    const cluster = c;
    const node = await cluster.addWorker('arm64', { slots: 1 });
    // An image the catalog has and this host does not hold: each attempt errors for a host reason.
    await cluster.catalogOnly('not-on-this-host', 'arm64');
    const ids = [];
    for (let i = 0; i < 3; i++)
      ids.push(await cluster.submit({ arch: 'arm64', image: 'not-on-this-host', script: 'true' }));
    await eventually(() => node.state === 'quarantined', 'quarantine', 20_000);
    const nodes = createNodeRegistry(cluster.client, cluster.keys);
    await eventually(
      async () => (await nodes.list())[0]?.state === 'quarantined',
      'quarantine visible',
      5000,
    );
    expect((await nodes.list())[0]?.quarantineReason).toMatch(/last 3 attempts errored.*not-on-this-host/);
    for (const id of ids) {
      const job = await cluster.queue.get(id);
      expect(job?.state).toBe('queued');
      expect(job?.attempts).toHaveLength(1);
      await cluster.queue.cancel(id);
    }
  });

  it('does not blame a node for an image published within ARCHWAY_IMAGE_SYNC_GRACE_SECONDS (its sync may still be on its way)', async () => {
    c = await startCluster();
    const cluster = c;
    // The catalog's version is an hour old: overdue at the default grace (above), not at two hours.
    const node = await cluster.addWorker('arm64', { slots: 1, imageSyncGraceMs: 2 * 3600_000 });
    await cluster.catalogOnly('not-on-this-host', 'arm64');
    const ids: string[] = [];
    for (let i = 0; i < 3; i++)
      ids.push(await cluster.submit({ arch: 'arm64', image: 'not-on-this-host', script: 'true' }));
    await eventually(
      async () => {
        for (const id of ids) {
          const job = await cluster.queue.get(id);
          if (!job?.attempts.some((a) => a.outcome === 'errored')) return false;
        }
        return true;
      },
      'an errored attempt of each job',
      20_000,
    );
    // Three errors, as above, where the default grace quarantined the node at once.
    await new Promise((r) => setTimeout(r, 1000));
    expect(node.state).toBe('active');
    for (const id of ids) await cluster.queue.cancel(id).catch(() => undefined);
  });
});
