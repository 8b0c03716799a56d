import { type ChildProcess, spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { createImageStore } from '../../images/index.ts';
import { startCluster, type TestCluster } from '../support/cluster.ts';
import { makeVersion, removeImage } from '../support/image-versions.ts';
import { checkLeftovers } from '../support/leak-check.ts';
import { eventually, TEST_ENV } from '../support/test-host.ts';

const store = createImageStore({ poolPath: TEST_ENV.ARCHWAY_POOL_PATH });
const IMAGE = 'warm-test-held';
let c: TestCluster | undefined;
let child: ChildProcess | undefined;
checkLeftovers('each', async () => {
  if (child && child.exitCode === null) {
    const exited = new Promise((r) => child?.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  }
  child = undefined;
  await c?.close();
  c = undefined;
  await removeImage(store, IMAGE);
});

describe('the worker process keeps warm the images it holds', () => {
  it('with no ARCHWAY_WARM_IMAGES, warms every image of its arch, not busybox only (issue 10, item 9)', async () => {
    await makeVersion(store, IMAGE, 'amd64', await store.resolve('busybox', 'amd64'));
    c = await startCluster();
    const port = 20_000 + (process.pid % 10_000);
    child = spawn('bin/archway', ['worker', '--arch', 'amd64', '--slots', '1', '--warm', '1'], {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        ...TEST_ENV,
        REDIS_URL: c.redis.url,
        ARCHWAY_REDIS_PREFIX: c.keys.prefix,
        ARCHWAY_NODE_ID: 'warm-held',
        ARCHWAY_EGRESS: 'false',
        ARCHWAY_WORKER_METRICS_PORT: String(port),
      },
      stdio: 'ignore',
    });
    const warmOf = async (image: string) => {
      const text = await fetch(`http://127.0.0.1:${port}/metrics`)
        .then((r) => r.text())
        .catch(() => '');
      const line = text
        .split('\n')
        .find((l) => l.startsWith('archway_warm_containers{') && l.includes(`image="${image}"`));
      return Number(line?.split(' ').at(-1) ?? 0);
    };
    await eventually(async () => (await warmOf(IMAGE)) === 1, `a warm container of ${IMAGE}`, 30_000);
    expect(await warmOf('busybox')).toBe(1);
  }, 60_000);
});
