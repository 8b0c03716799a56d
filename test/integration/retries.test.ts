import { describe, expect, it } from 'vitest';
import { MAX_ATTEMPTS } from '../../queue/index.ts';
import { retryBackoffMs } from '../../workers/index.ts';
import { startCluster, type TestCluster } from '../support/cluster.ts';
import { checkLeftovers } from '../support/leak-check.ts';

let c: TestCluster | undefined;
checkLeftovers('each', async () => {
  await c?.close();
  c = undefined;
});

// An image the catalog has and the test host does not hold: each attempt errors for a host reason
// (the node did not sync it; another node might hold it).
const hostFault = { image: 'not-on-this-host', script: 'true' } as const;

describe('retries of errored attempts', () => {
  it('on a pool of one node: retried on that node after a growing back-off, then errored with every attempt on the record', async () => {
    c = await startCluster();
    const node = await c.addWorker('arm64', { slots: 1 });
    await c.catalogOnly(hostFault.image, 'arm64');
    const id = await c.submit({ arch: 'arm64', ...hostFault });
    const job = await c.waitFinal(id, 60_000);
    expect(job).toMatchObject({ state: 'errored', reason: 'infra', attempt: MAX_ATTEMPTS });
    expect(job.attempts).toHaveLength(MAX_ATTEMPTS);
    for (const [i, a] of job.attempts.entries()) {
      expect(a).toMatchObject({ n: i + 1, outcome: 'errored', reason: 'infra' });
      expect(a.error).toMatch(/not-on-this-host/);
      const next = job.attempts[i + 1];
      // Each retry waited at least its back-off after the attempt before it (a lower bound, by design).
      if (next)
        expect(Date.parse(next.startedAt) - Date.parse(a.endedAt ?? '')).toBeGreaterThanOrEqual(
          retryBackoffMs(a.n),
        );
    }
    const log = await c.log(id);
    expect(log).toMatch(/no other node of arm64 is live: the retry waits 2 s/);
    expect(log).toMatch(/the retry waits 4 s/);
    // The retries of one job count once toward quarantine: the only node goes on taking jobs.
    expect(node.state).toBe('active');
    // Each errored attempt counts in the node's outcomes (what the infra error-rate alert reads).
    const text = (await c.metrics[0]?.registry.metrics()) ?? '';
    expect(text).toMatch(
      new RegExp(
        `archway_job_outcomes_total\\{[^}]*state="errored",reason="infra"[^}]*\\} ${MAX_ATTEMPTS}\\n`,
      ),
    );
  }, 90_000);

  it('with another live node: the retry runs there, not where it errored', async () => {
    c = await startCluster();
    await c.addWorker('arm64', { slots: 1 });
    await c.addWorker('arm64', { slots: 1 });
    await c.catalogOnly(hostFault.image, 'arm64');
    const id = await c.submit({ arch: 'arm64', ...hostFault });
    const job = await c.waitFinal(id, 60_000);
    expect(job.state).toBe('errored');
    expect(job.attempts).toHaveLength(MAX_ATTEMPTS);
    for (let i = 1; i < job.attempts.length; i++)
      expect(job.attempts[i]?.node).not.toBe(job.attempts[i - 1]?.node);
    expect(await c.log(id)).not.toMatch(/the retry waits/);
  }, 90_000);
});
