import { describe, expect, it } from 'vitest';
import { createNodeRegistry } from '../../queue/index.ts';
import { startCluster, type TestCluster } from '../support/cluster.ts';
import { checkLeftovers } from '../support/leak-check.ts';
import { eventually } from '../support/test-host.ts';
import { exited, workerProcesses } from '../support/worker-process.ts';

// The worker process closes through the core's closer, as the API and the scaler do: the first
// signal drains (the running job finishes), a second ends the running job (back to the queue).

let c: TestCluster | undefined;
const workers = workerProcesses();
const spawnWorker = workers.spawn;

checkLeftovers(
  'each',
  () => workers.stopAll('SIGKILL'),
  async () => {
    await c?.close();
    c = undefined;
  },
);

describe('worker process signals', () => {
  it('first SIGTERM: the running job finishes, the node leaves, exit 0', async () => {
    c = await startCluster();
    const cluster = c;
    const worker = spawnWorker(cluster, 'sig-drain');
    const id = await cluster.submit({
      arch: 'amd64',
      image: 'busybox',
      script: 'echo started; sleep 2; echo finished',
    });
    await eventually(async () => (await cluster.log(id)).includes('started'), 'the job to start', 30_000);
    worker.kill('SIGTERM');
    expect(await exited(worker)).toBe(0);
    const job = await cluster.waitFinal(id);
    expect(job).toMatchObject({ state: 'passed', attempt: 1 });
    expect(await cluster.log(id)).toContain('finished\n');
    expect(await createNodeRegistry(cluster.client, cluster.keys).list()).toEqual([]);
  }, 60_000);

  it('second SIGTERM: the running job ends and goes back to the queue as an errored attempt; exit 0', async () => {
    c = await startCluster();
    const cluster = c;
    const worker = spawnWorker(cluster, 'sig-stop');
    const id = await cluster.submit({
      arch: 'amd64',
      image: 'busybox',
      // Long on the first attempt only: the retry on the next node ends at once.
      script: 'echo started; if [ "$ARCHWAY_ATTEMPT" = 1 ]; then sleep 60; fi; echo finished',
    });
    await eventually(async () => (await cluster.log(id)).includes('started'), 'the job to start', 30_000);
    worker.kill('SIGTERM');
    const nodes = createNodeRegistry(cluster.client, cluster.keys);
    await eventually(async () => (await nodes.get('sig-stop'))?.state === 'draining', 'draining', 10_000);
    worker.kill('SIGTERM');
    expect(await exited(worker)).toBe(0);
    const job = await cluster.queue.get(id);
    expect(job).toMatchObject({ state: 'queued', attempt: 1 });
    expect(job?.attempts[0]).toMatchObject({ outcome: 'errored', error: 'the node was stopped' });
    expect(await cluster.log(id)).not.toContain('finished\n');
    expect(await nodes.list()).toEqual([]);
    // Another node runs it to its end.
    await cluster.addWorker('amd64', { slots: 1 });
    const done = await cluster.waitFinal(id, 60_000);
    expect(done).toMatchObject({ state: 'passed', attempt: 2 });
  }, 120_000);
});
