import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { startCluster, type TestCluster } from '../support/cluster.ts';
import { checkLeftovers } from '../support/leak-check.ts';
import { TEST_ENV } from '../support/test-host.ts';

let c: TestCluster | undefined;
checkLeftovers('each', async () => {
  await c?.close();
  c = undefined;
});

const runMs = (j: { startedAt?: string | undefined; finishedAt?: string | undefined }) =>
  Date.parse(j.finishedAt ?? '') - Date.parse(j.startedAt ?? '');

describe('per-arch time multipliers', () => {
  it('on an emulated s390x node with x3: a job past its base limits passes, one past the scaled limits stops', async () => {
    c = await startCluster();
    const cluster = c;
    await cluster.addWorker('s390x', { slots: 3, timeMultiplier: 3 });
    // 6 s with 3 s gaps: past a time limit of 4 s and a silence limit of 2 s, within 12 s and 6 s.
    const within = await cluster.submit({
      arch: 's390x',
      image: 'busybox',
      script: 'sleep 3; echo half; sleep 3; echo done',
      timeoutSeconds: 4,
      silenceTimeoutSeconds: 2,
    });
    const pastTime = await cluster.submit({
      arch: 's390x',
      image: 'busybox',
      script: 'while true; do echo tick; sleep 1; done',
      timeoutSeconds: 4,
      silenceTimeoutSeconds: 30,
    });
    const pastSilence = await cluster.submit({
      arch: 's390x',
      image: 'busybox',
      script: 'echo once; sleep 60',
      timeoutSeconds: 60,
      silenceTimeoutSeconds: 1,
    });

    const ok = await cluster.waitFinal(within, 60_000);
    expect(ok).toMatchObject({ state: 'passed', exitCode: 0 });
    expect(runMs(ok)).toBeGreaterThan(4000);
    expect(ok.effectiveLimits).toEqual({ timeoutSeconds: 12, silenceTimeoutSeconds: 6, multiplier: 3 });
    expect(await cluster.log(within)).toContain(
      '[archway] time limits x3 on s390x (emulated): 4s -> 12s, silence 2s -> 6s\n',
    );

    const timedOut = await cluster.waitFinal(pastTime, 60_000);
    expect(timedOut).toMatchObject({ state: 'failed', reason: 'timeout' });
    // Stopped at the scaled limit, not the base one.
    expect(runMs(timedOut)).toBeGreaterThanOrEqual(12_000);
    expect(runMs(timedOut)).toBeLessThan(30_000);
    expect(await cluster.log(pastTime)).toMatch(/ran longer than its time limit of 12 s \(4 s x3 on s390x\)/);

    const silent = await cluster.waitFinal(pastSilence, 60_000);
    expect(silent).toMatchObject({ state: 'failed', reason: 'silence' });
    expect(runMs(silent)).toBeGreaterThanOrEqual(3000);
    expect(runMs(silent)).toBeLessThan(30_000);
    expect(await cluster.log(pastSilence)).toMatch(/no output for 3 s \(1 s x3 on s390x\)/);
  }, 120_000);

  // Every bad form is in test/unit/time-limits.test.ts; here, that the worker process stops on one.
  it.each(['s390x:0', 'sparc:2'])(
    'a worker with ARCHWAY_TIME_MULTIPLIERS=%s does not start, and says which setting is wrong',
    async (value) => {
      const r = await execa('bin/archway', ['worker', '--arch', 's390x', '--slots', '1'], {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...TEST_ENV, ARCHWAY_TIME_MULTIPLIERS: value },
        extendEnv: false,
        reject: false,
        timeout: 30_000,
      });
      expect(r.exitCode).not.toBe(0);
      expect(r.stderr).toMatch(/ARCHWAY_TIME_MULTIPLIERS: invalid value/);
      expect(r.stderr).toContain(JSON.stringify(value));
    },
  );
});
