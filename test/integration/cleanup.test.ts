import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import {
  AbortedError,
  createHostLeases,
  poolLayout,
  processAlive,
  runCommand,
} from '../../src/core/index.ts';
import { checkLeftovers, testHosts } from '../support/leak-check.ts';
import { collect, eventually, leftovers, TEST_ENV, testConfig } from '../support/test-host.ts';

const hosts = testHosts();
const host = () => hosts.host('arm64');
checkLeftovers('each', hosts.close);

describe.each(['none', 'egress'] as const)('nothing is left behind, network %s', (network) => {
  it('after success and after failure', async () => {
    const h = await host();
    expect(
      (await collect(await h.launcher.launch({ jobId: 'ok', image: 'busybox', argv: ['true'], network })))
        .exitCode,
    ).toBe(0);
    expect(
      (
        await collect(
          await h.launcher.launch({ jobId: 'fail', image: 'busybox', argv: ['sh', '-c', 'exit 7'], network }),
        )
      ).exitCode,
    ).toBe(7);
  });

  it('after a timeout, even with processes left in the background', async () => {
    const h = await host();
    const r = await collect(
      await h.launcher.launch({
        jobId: 'slow',
        image: 'busybox',
        argv: ['sh', '-c', 'sleep 100 & sleep 100'],
        timeoutSeconds: 1,
        network,
      }),
    );
    expect(r.reason).toBe('timeout');
    expect(r.exitCode).not.toBe(0);
  });

  it('after a cancel while the container is being made, at any moment', async () => {
    const h = await host();
    for (const delayMs of [0, 5, 15, 30, 60]) {
      const ctl = new AbortController();
      setTimeout(() => ctl.abort(new Error('user canceled')), delayMs);
      try {
        const job = await h.launcher.launch(
          { jobId: `cancel-start-${delayMs}`, image: 'busybox', argv: ['sleep', '30'], network },
          { signal: ctl.signal },
        );
        // The launch won the race: the cancel then ends the running job.
        expect((await collect(job)).reason).toBe('canceled');
      } catch (e) {
        expect(e).toBeInstanceOf(AbortedError);
      }
    }
  });

  it('after a cancel while the job runs', async () => {
    const h = await host();
    const job = await h.launcher.launch({
      jobId: 'cancel-run',
      image: 'busybox',
      argv: ['sh', '-c', 'echo started; sleep 60'],
      network,
    });
    let out = '';
    job.output.on('data', (c: Buffer) => {
      out += c.toString();
    });
    await eventually(() => out.includes('started'), 'the job to start');
    job.cancel();
    const r = await job.result;
    expect(r.reason).toBe('canceled');
  });

  it('after SIGKILL of the process that drove the runtime, once a runtime starts again', async () => {
    const child = spawn(
      'bin/archway',
      [
        'run',
        '--arch',
        'arm64',
        '--image',
        'busybox',
        '--network',
        network,
        '--',
        'sh',
        '-c',
        'echo up; sleep 300',
      ],
      {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...TEST_ENV },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    await eventually(() => out.includes('up'), 'the job in the child to start', 30_000);
    expect(await leftovers()).not.toEqual([]);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    // Still there: nobody has cleaned up yet.
    expect((await readdir(poolLayout(TEST_ENV.ARCHWAY_POOL_PATH).jobs)).length).toBe(1);
    // The orphan keeps its uid range: its lease names its init, which lives on.
    const config = testConfig();
    const leases = createHostLeases({ dir: config.ARCHWAY_UID_LEASE_DIR, size: config.ARCHWAY_UID_RANGES });
    const childs = async () => [...(await leases.list()).values()].filter((l) => l.owner.pid === child.pid);
    const [lease] = await childs();
    expect(lease?.init).toBeDefined();
    expect(await processAlive(lease?.init ?? { pid: 0, start: '' })).toBe(true);
    // A lease whose taker died before its container ran (no init) is garbage, whatever its pool.
    const ghost = await leases.acquire({ id: 'aw-ghost', owner: { pid: 2 ** 22 + 1, start: '0' } });
    const h = await host();
    const removed = await h.runtime.reap({});
    expect(removed).toHaveLength(1);
    // The job's veth went with its netns, and its address lease is back.
    const links = await runCommand('ip', ['-o', 'link', 'show']);
    const netLeases = await createHostLeases({
      dir: `${config.ARCHWAY_NET_STATE_DIR}/leases`,
      size: 1,
    }).list();
    for (const [i, l] of netLeases) if (l.owner.pid === child.pid) expect(links).not.toContain(`awn${i}:`);
    expect([...netLeases.values()].filter((l) => l.owner.pid === child.pid)).toEqual([]);
    expect(await childs()).toEqual([]);
    expect((await leases.list()).get(ghost)?.id).not.toBe('aw-ghost');
  });
});

describe('a closed launcher', () => {
  it('aborts a launch still making its container, removes it, and refuses the next', async () => {
    const h = await host();
    const inFlight = h.launcher.launch({ jobId: 'in-flight', image: 'busybox', argv: ['true'] });
    const closed = h.launcher.close();
    await expect(inFlight).rejects.toThrow(AbortedError);
    await closed;
    await expect(h.launcher.launch({ jobId: 'after', image: 'busybox', argv: ['true'] })).rejects.toThrow(
      /the launcher is closed/,
    );
    // checkLeftovers: neither left a container, snapshot, bundle, lease or cgroup.
  });
});
