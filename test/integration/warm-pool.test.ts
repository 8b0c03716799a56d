import { describe, expect, it } from 'vitest';
import { createImageStore } from '../../images/index.ts';
import { warmTargetsOf } from '../../workers/index.ts';
import { makeVersion, removeImage } from '../support/image-versions.ts';
import { checkLeftovers } from '../support/leak-check.ts';
import {
  collect,
  createTestHost,
  eventually,
  leftovers,
  type TestHost,
  testConfig,
} from '../support/test-host.ts';

let h: TestHost | undefined;
checkLeftovers('each', async () => {
  await h?.launcher.close();
  h = undefined;
});

describe('warm pool', () => {
  it('hands each job a warm container once, refills in the background, and never shows a job the last one', async () => {
    h = await createTestHost('s390x', { warm: { busybox: 2 } });
    const host = h;
    await eventually(
      async () => (await leftovers()).filter((l) => l.startsWith('warm/')).length === 2,
      'two warm containers',
    );

    const first = await host.launcher.launch({
      jobId: 'warm-1',
      image: 'busybox',
      argv: ['sh', '-c', 'echo secret > /root/leftover; touch /tmp/leftover; hostname'],
    });
    expect(first.warm).toBe(true);
    const r1 = await collect(first);
    expect(r1.output.trim()).toBe('warm-1');

    const second = await host.launcher.launch({
      jobId: 'warm-2',
      image: 'busybox',
      argv: ['sh', '-c', 'ls /root /tmp; hostname'],
    });
    expect(second.warm).toBe(true);
    const r2 = await collect(second);
    expect(r2.output).not.toContain('leftover');
    expect(r2.output.trim().split('\n').at(-1)).toBe('warm-2');

    // Both used containers are destroyed and the pool is back to two, all of them unused.
    await host.warmPool?.filled();
    expect(host.warmPool?.sizes()).toEqual({ busybox: 2 });
    await eventually(
      async () => (await leftovers()).filter((x) => x.startsWith('bundles/')).length === 2,
      'used containers destroyed',
    );
  });

  it('launches cold when no warm container is ready, and applies the job’s own limits to a warm one', async () => {
    h = await createTestHost('amd64', { warm: { busybox: 1 } });
    const host = h;
    await host.warmPool?.filled();
    // Two launches at once against a pool of one: the second finds none ready (a refill takes
    // tens of ms) and starts cold. Launched together, so no timing of the refill matters.
    const limitsOf = (jobId: string) =>
      host.launcher.launch({
        jobId,
        image: 'busybox',
        argv: [
          'sh',
          '-c',
          'cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max',
        ],
        limits: { memoryMiB: 300, pids: 77 },
      });
    const jobs = await Promise.all([limitsOf('first'), limitsOf('second')]);
    // One got the warm container (its limits were updated at exec), the other was made cold with them.
    expect(jobs.map((j) => j.warm).sort()).toEqual([false, true]);
    for (const job of jobs) {
      const [mem, pids] = (await collect(job)).output.trim().split('\n');
      expect(Number(mem)).toBe(300 * 1024 * 1024);
      expect(pids).toBe('77');
    }
  });

  it('keeps every image the node holds warm by default, not busybox only (issue 10, item 9)', async () => {
    // A second image on this node, as debian-bookworm-build is on a node that built or synced it.
    const store = createImageStore({ poolPath: testConfig().ARCHWAY_POOL_PATH });
    const name = 'warm-test-second';
    await makeVersion(store, name, 'amd64', await store.resolve('busybox', 'amd64'));
    try {
      // What the worker does at start with no ARCHWAY_WARM_IMAGES and no --warm-images.
      const chosen = await warmTargetsOf(store, 'amd64', { listed: [], warm: 1, networks: 1, max: 8 });
      expect(chosen.targets).toMatchObject({ busybox: 1, [name]: 1 });
      h = await createTestHost('amd64', { warm: chosen.targets });
      const host = h;
      await host.warmPool?.filled();
      const job = await host.launcher.launch({ jobId: 'warm-second', image: name, argv: ['hostname'] });
      expect(job.warm).toBe(true);
      expect((await collect(job)).output.trim()).toBe('warm-second');
      await host.launcher.close();
      h = undefined;
    } finally {
      await removeImage(store, name);
    }
  });

  it('adopts an image its jobs ask for: the first job starts cold, the next one warm', async () => {
    const store = createImageStore({ poolPath: testConfig().ARCHWAY_POOL_PATH });
    const name = 'warm-test-asked';
    const other = 'warm-test-other';
    const busybox = await store.resolve('busybox', 'amd64');
    await makeVersion(store, name, 'amd64', busybox);
    await makeVersion(store, other, 'amd64', busybox);
    try {
      h = await createTestHost('amd64', { warm: { busybox: 1 }, adopt: { max: 2, per: 1 } });
      const host = h;
      await host.warmPool?.filled();
      const first = await host.launcher.launch({ jobId: 'asked-1', image: name, argv: ['true'] });
      expect(first.warm).toBe(false);
      await collect(first);
      await host.warmPool?.filled();
      expect(host.warmPool?.sizes()).toEqual({ busybox: 1, [name]: 1 });
      const second = await host.launcher.launch({ jobId: 'asked-2', image: name, argv: ['true'] });
      expect(second.warm).toBe(true);
      await collect(second);
      // The budget (2) is spent: a third image stays cold and gets no target.
      const third = await host.launcher.launch({ jobId: 'asked-3', image: other, argv: ['true'] });
      expect(third.warm).toBe(false);
      await collect(third);
      expect(Object.keys(host.warmPool?.sizes() ?? {}).sort()).toEqual(['busybox', name].sort());
      await host.launcher.close();
      h = undefined;
    } finally {
      await removeImage(store, name);
      await removeImage(store, other);
    }
  });
});
