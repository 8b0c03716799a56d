import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import type { ApiProcess } from '../../src/api/index.ts';
import { ARCH_INFO, ARCHES } from '../../src/core/index.ts';
import { startCluster, type TestCluster } from '../support/cluster.ts';
import { checkLeftovers } from '../support/leak-check.ts';
import { eventually } from '../support/test-host.ts';

let c: TestCluster;
let api: ApiProcess;
const token = randomBytes(20).toString('hex');
const cli = (args: string[]) =>
  execa('bin/archway', args, {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ARCHWAY_URL: api.url, ARCHWAY_TOKEN: token },
    extendEnv: false,
    reject: false,
  });
const http = (path: string, init: RequestInit = {}) =>
  fetch(`${api.url}${path}`, {
    ...init,
    headers: {
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
      ...(init.headers ?? {}),
    },
  });

beforeAll(async () => {
  c = await startCluster();
  for (const arch of ARCHES) await c.addWorker(arch, { slots: 2, warm: arch === 'arm64' ? 1 : 0 });
  api = await c.startApi(token);
});
checkLeftovers('all', async () => {
  await api?.close();
  await c?.close();
});

describe('end to end: the CLI, the API, workers of every arch', () => {
  it.each(ARCHES)('submit --follow on %s streams the log and exits with the job’s code', async (arch) => {
    const ok = await cli([
      'submit',
      '--arch',
      arch,
      '--image',
      'busybox',
      '--follow',
      '--',
      'uname -m; echo done',
    ]);
    expect(ok.stdout).toContain(`\n${ARCH_INFO[arch].uname}\ndone\n`);
    expect(ok.exitCode).toBe(0);
  });

  it('a failing job: submit --follow exits with its code; jobs lists it', async () => {
    const r = await cli(['submit', '--arch', 'aarch64', '--image', 'busybox', '--follow', '--', 'exit 5']);
    expect(r.exitCode).toBe(5);
    const jobs = await cli(['jobs', '--state', 'failed']);
    expect(jobs.stdout).toMatch(/arm64\s+failed\s+exit 5\s+busybox/);
  });

  it('a timeout through the API: failed with reason timeout; submit --follow exits 124', async () => {
    const r = await cli([
      'submit',
      '--arch',
      'amd64',
      '--image',
      'busybox',
      '--timeout',
      '1',
      '--follow',
      '--',
      'sleep 30',
    ]);
    expect(r.exitCode).toBe(124);
  });

  it('idempotent resubmission makes one job', async () => {
    const body = JSON.stringify({ arch: 'amd64', image: 'busybox', script: 'echo once' });
    const a = await http('/v1/jobs', { method: 'POST', body, headers: { 'idempotency-key': 'e2e-1' } });
    const b = await http('/v1/jobs', { method: 'POST', body, headers: { 'idempotency-key': 'e2e-1' } });
    expect([a.status, b.status]).toEqual([201, 200]);
    const [ja, jb] = [
      (await a.json()) as { job: { id: string } },
      (await b.json()) as { job: { id: string } },
    ];
    expect(jb.job.id).toBe(ja.job.id);
    expect((await c.waitFinal(ja.job.id)).attempts).toHaveLength(1);
  });

  it('SSE resumes from Last-Event-ID in the middle of a log, with nothing repeated or lost', async () => {
    const res = await http('/v1/jobs', {
      method: 'POST',
      body: JSON.stringify({
        arch: 'amd64',
        image: 'busybox',
        script: 'for i in $(seq 1 30); do echo line-$i; sleep 0.05; done',
      }),
    });
    const { job } = (await res.json()) as { job: { id: string } };
    await c.waitFinal(job.id);
    const events = async (headers: Record<string, string> = {}) => {
      const r = await http(`/v1/jobs/${job.id}/log`, {
        headers: { accept: 'text/event-stream', ...headers },
      });
      const text = await r.text();
      return text
        .split('\n\n')
        .filter((e) => e.includes('event: log'))
        .map((e) => ({
          id: e.match(/^id: (.+)$/m)?.[1] ?? '',
          data: JSON.parse(e.match(/^data: (.+)$/m)?.[1] ?? '""') as string,
        }));
    };
    const all = await events();
    expect(all.length).toBeGreaterThan(3);
    const mid = Math.floor(all.length / 2);
    const rest = await events({ 'last-event-id': all[mid - 1]?.id ?? '' });
    expect(rest).toEqual(all.slice(mid));
    expect(all.map((e) => e.data).join('')).toContain('line-1\n');
    expect(all.map((e) => e.data).join('')).toContain('line-30\n');
  });

  it('cancel through the CLI reaches a running job', async () => {
    const res = await http('/v1/jobs', {
      method: 'POST',
      body: JSON.stringify({ arch: 's390x', image: 'busybox', script: 'echo up; sleep 60' }),
    });
    const { job } = (await res.json()) as { job: { id: string } };
    await eventually(async () => (await c.log(job.id)).includes('up\n'), 'the job to run', 20_000);
    const r = await cli(['cancel', job.id]);
    expect(r.exitCode).toBe(0);
    expect((await c.waitFinal(job.id)).state).toBe('canceled');
  });

  it('nodes lists every arch, and the API /metrics counts them', async () => {
    const r = await cli(['nodes']);
    for (const arch of ARCHES)
      expect(r.stdout).toMatch(
        new RegExp(`test-${arch}-\\w+\\s+${arch}\\s+x64\\s+(yes|no)\\s+2\\s+\\d\\s+ONLINE`),
      );
    const metrics = await (await fetch(`${api.url}/metrics`)).text();
    expect(metrics).toMatch(/archway_nodes\{arch="s390x",state="active"\} 1/);
    // A pool never set shows its defaults.
    expect(metrics).toMatch(/archway_pool_nodes\{arch="arm64",kind="max"\} \d+/);
  });
});
