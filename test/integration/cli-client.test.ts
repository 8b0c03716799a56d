import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import type { ApiProcess } from '../../src/api/index.ts';
import { startCluster, type TestCluster } from '../support/cluster.ts';
import { checkLeftovers } from '../support/leak-check.ts';
import { TEST_ENV } from '../support/test-host.ts';

let c: TestCluster;
let api: ApiProcess;
let dir: string;
const token = randomBytes(20).toString('hex');
const PATH = process.env.PATH ?? '/usr/bin:/bin';
const cli = (args: string[], env: Record<string, string> = { ARCHWAY_URL: api.url, ARCHWAY_TOKEN: token }) =>
  execa('bin/archway', args, { env: { PATH, ...env }, extendEnv: false, reject: false });
/** The CLI running in the background (a follow), with what it printed on stderr so far. */
const background = (args: string[]) => {
  const proc = cli(args);
  const out = { err: '', proc };
  proc.stderr?.on('data', (d: Buffer) => {
    out.err += d.toString();
  });
  return out;
};
const json = async <T>(args: string[]): Promise<T> => {
  const r = await cli(args);
  expect(r.stderr).toBe('');
  expect(r.exitCode).toBe(0);
  return JSON.parse(r.stdout) as T;
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'archway-cli-'));
  c = await startCluster();
  await c.addWorker('amd64', { slots: 2, warm: 0 });
  api = await c.startApi(token);
});
checkLeftovers('all', async () => {
  await api?.close();
  await c?.close();
  await rm(dir, { recursive: true, force: true });
});

interface Job {
  id: string;
  state: string;
  reason?: string;
  exitCode?: number;
  node?: string;
  imageDigest?: string;
  attempts: { n: number; node: string; outcome?: string }[];
  spec: Record<string, unknown>;
}

describe('bin/archway as scripts use it (issue #13)', () => {
  it('--version prints the version alone', async () => {
    const r = await cli(['--version'], {});
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('submit takes the limit flags and --script-file; job show --json has them and the outcome', async () => {
    const script = join(dir, 'job.sh');
    await writeFile(script, 'echo from-file\nexit 3\n');
    const created = await json<{ job: Job; warnings: string[] }>([
      'submit',
      '--arch',
      'amd64',
      '--image',
      'busybox',
      '--memory',
      '256',
      '--cpus',
      '0.5',
      '--pids',
      '64',
      '--disk',
      '100',
      '--silence-timeout',
      '30',
      '--priority',
      '2',
      '--network',
      'none',
      '--script-file',
      script,
      '--json',
    ]);
    expect(created.job.spec).toMatchObject({
      script: 'echo from-file\nexit 3\n',
      resources: { memoryMiB: 256, cpus: 0.5, pids: 64, diskMiB: 100 },
      silenceTimeoutSeconds: 30,
      priority: 2,
      network: 'none',
    });
    // logs --follow exits with the job's own code (it exited 0 for a failed job: issue #10).
    const follow = await cli(['logs', created.job.id, '--follow']);
    expect(follow.stdout).toMatch(/^from-file$/m);
    expect(follow.exitCode).toBe(3);
    expect(follow.stderr).toMatch(/failed with exit code 3$/m);

    const job = await json<Job>(['job', 'show', created.job.id, '--json']);
    expect(job).toMatchObject({ id: created.job.id, state: 'failed', exitCode: 3 });
    expect(job.imageDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(job.attempts).toEqual([expect.objectContaining({ n: 1, outcome: 'failed', node: job.node })]);
    // Its page, a signed link (issue 12), in --json and for people.
    const pageUrl = (job as Job & { pageUrl?: string }).pageUrl ?? '';
    expect(pageUrl).toMatch(new RegExp(`^${api.url}/jobs/${job.id}\\?exp=\\d+&sig=[\\w-]{43}$`));
    expect((await fetch(pageUrl)).status).toBe(200);

    const human = await cli(['job', 'show', created.job.id]);
    expect(human.exitCode).toBe(0);
    expect(human.stdout).toMatch(/^state: +failed$/m);
    expect(human.stdout).toMatch(new RegExp(`^image: +busybox \\(${job.imageDigest}\\)$`, 'm'));
    expect(human.stdout).toMatch(new RegExp(`^node: +${job.node}$`, 'm'));
    expect(human.stdout).toMatch(new RegExp(`^log: +${api.url}/v1/jobs/${job.id}/log `, 'm'));
    expect(human.stdout).toMatch(new RegExp(`^page: +${api.url}/jobs/${job.id}\\?exp=\\d+&sig=`, 'm'));
    expect(human.stdout).toMatch(/^attempts: 1\n +# +NODE +OUTCOME.*\n +1 +\S+ +failed/m);
  });

  it('--json on every list: jobs, nodes, pools, images status, in the API shapes', async () => {
    const jobs = await json<{ jobs: Job[] }>(['jobs', '--limit', '5', '--json']);
    expect(jobs.jobs.length).toBeGreaterThan(0);
    expect(jobs.jobs[0]).toHaveProperty('state');
    const nodes = await json<{ nodes: { id: string; arch: string; lost: boolean }[] }>(['nodes', '--json']);
    expect(nodes.nodes).toEqual(
      expect.arrayContaining([expect.objectContaining({ arch: 'amd64', lost: false })]),
    );
    const pools = await json<{ pools: { arch: string; healthyNodes: number }[] }>(['pools', '--json']);
    expect(pools.pools.find((p) => p.arch === 'amd64')?.healthyNodes).toBe(1);
    const images = await json<{ images: unknown[] }>(['images', 'status', '--json']);
    expect(Array.isArray(images.images)).toBe(true);
  });

  it('a timeout exits 124 and says so, never the 137 of the kill (issue #10)', async () => {
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
    expect(r.stderr).toMatch(/failed: it ran past its time limit \(timeout\); exit 124$/m);
    expect(r.stderr).not.toMatch(/137/);
  });

  it('a follow of a queued job says what it waits for; canceled, it exits 130', async () => {
    const id = (await cli(['submit', '--arch', 's390x', '--image', 'busybox', '--', 'true'])).stdout;
    const follow = background(['logs', id, '--follow']);
    for (let i = 0; i < 100 && !follow.err.includes('is queued'); i++)
      await new Promise((r) => setTimeout(r, 100));
    expect(follow.err).toMatch(
      new RegExp(`job ${id} is queued: 1st of 1 in the s390x queue, no live s390x node, wait unknown \\(`),
    );
    expect((await cli(['cancel', id])).exitCode).toBe(0);
    const r = await follow.proc;
    expect(r.exitCode).toBe(130);
  });

  it('submit --follow of a queued job prints its place in the queue, a line each time it moves up (issue #13)', async () => {
    const submit = async (...args: string[]) =>
      (await cli(['submit', '--arch', 'amd64', '--image', 'busybox', ...args])).stdout;
    const state = async (id: string) => (await json<Job>(['job', 'show', id, '--json'])).state;
    const until = async (what: string, check: () => Promise<boolean> | boolean) => {
      for (let i = 0; i < 300; i++) {
        if (await check()) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`timed out waiting for ${what}`);
    };
    // The node's two slots busy, and two jobs in line before the followed one.
    const busy = [await submit('--', 'sleep 60'), await submit('--', 'sleep 60')];
    for (const id of busy) await until(`${id} to run`, async () => (await state(id)) === 'running');
    const ahead = [await submit('--', 'sleep 60'), await submit('--', 'sleep 60')];
    const follow = background([
      'submit',
      '--arch',
      'amd64',
      '--image',
      'busybox',
      '--follow',
      '--',
      'echo reached-the-front',
    ]);
    try {
      await until('the job id', () => /archway: job (j\w+) \(amd64, busybox\)/.test(follow.err));
      const id = /archway: job (j\w+) \(amd64, busybox\)/.exec(follow.err)?.[1] ?? '';
      const line = (place: string) =>
        new RegExp(
          `^archway: job ${id} is queued: ${place} in the amd64 queue, 1 amd64 node \\(2 slots\\), (estimated wait \\d+s|wait unknown \\(.+\\))$`,
          'm',
        );
      await until('3rd of 3', () => line('3rd of 3').test(follow.err));
      // job show says it too.
      const shown = await cli(['job', 'show', id]);
      expect(shown.stdout).toMatch(
        /^queue: +3rd of 3 in the amd64 queue, (estimated wait \d+s|wait unknown)/m,
      );
      expect((await json<{ queue: unknown }>(['job', 'show', id, '--json'])).queue).toMatchObject({
        status: 'waiting',
        position: 3,
        of: 3,
      });
      // A slot frees: the first in line starts, the followed job moves up; and again.
      await cli(['cancel', busy[0] as string]);
      await until('2nd of 2', () => line('2nd of 2').test(follow.err));
      await cli(['cancel', busy[1] as string]);
      await until('1st of 1', () => line('1st of 1').test(follow.err));
      await cli(['cancel', ahead[0] as string]);
      const r = await follow.proc;
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toMatch(/^reached-the-front$/m);
      // Not a TTY: a line per change, in order, none printed twice in a row.
      const waits = r.stderr.split('\n').filter((l) => l.includes(' is queued: '));
      const firstAt = (p: string) => waits.findIndex((l) => l.includes(`: ${p} in the amd64 queue`));
      expect(firstAt('3rd of 3')).toBeGreaterThanOrEqual(0);
      expect(firstAt('3rd of 3')).toBeLessThan(firstAt('2nd of 2'));
      expect(firstAt('2nd of 2')).toBeLessThan(firstAt('1st of 1'));
      for (const [i, l] of waits.entries()) if (i > 0) expect(l).not.toBe(waits[i - 1]);
    } finally {
      follow.proc.kill();
      for (const id of [...busy, ...ahead]) await cli(['cancel', id]);
    }
  });

  it('a 401 names the API that answered; ARCHWAY_PORT alone finds a local API', async () => {
    const bad = await cli(['jobs'], { ARCHWAY_URL: api.url, ARCHWAY_TOKEN: 'not-the-token-000000' });
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain(`from the API at ${api.url}`);
    const port = new URL(api.url).port;
    const byPort = await cli(['jobs', '--json'], { ARCHWAY_PORT: port, ARCHWAY_TOKEN: token });
    expect(byPort.exitCode).toBe(0);
    expect(JSON.parse(byPort.stdout)).toHaveProperty('jobs');
  });

  it('a reader that goes away (| head -1) ends the command quietly', async () => {
    const r = await execa('bash', ['-c', `bin/archway doctor | head -1; echo "exit=\${PIPESTATUS[0]}" >&2`], {
      env: { PATH, ...TEST_ENV },
      extendEnv: false,
      reject: false,
    });
    expect(r.stdout.split('\n')).toHaveLength(1);
    expect(r.stderr).not.toMatch(/EPIPE|\n\s+at /);
    expect(r.stderr).toMatch(/exit=[01]$/);
  });

  it('logs as human lines on a terminal, JSON lines in a pipe or with --log-format json', async () => {
    const env = {
      PATH,
      REDIS_URL: c.redis.url,
      ARCHWAY_REDIS_PREFIX: c.keys.prefix,
      ARCHWAY_TOKEN: token,
      ARCHWAY_PORT: '23051',
    };
    const run = async (cmd: string, args: string[]) => {
      const p = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stdout.on('data', (d: Buffer) => {
        out += d.toString();
      });
      p.stderr.on('data', (d: Buffer) => {
        out += d.toString();
      });
      for (let i = 0; i < 150 && !/api listening/.test(out); i++)
        await new Promise((r) => setTimeout(r, 100));
      // Requests are logged at debug only: none of fastify's two lines per request at info.
      await fetch('http://127.0.0.1:23051/healthz');
      await new Promise((r) => setTimeout(r, 300));
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await exited;
      return out;
    };
    // `script` gives the command a pseudo-terminal, as a user's shell does.
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the colours of a terminal
    const plain = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, '');
    const tty = plain(await run('script', ['-qec', 'bin/archway api', '/dev/null']));
    expect(tty).toMatch(/^\[\d\d:\d\d:\d\d\] INFO: api: api listening/m);
    expect(tty).not.toMatch(/"level":/);
    expect(tty).not.toMatch(/incoming request|request completed/);
    const ttyJson = await run('script', ['-qec', 'bin/archway api --log-format json', '/dev/null']);
    expect(ttyJson).toMatch(/^\{"level":30,.*"msg":"api listening"/m);
    const piped = await run('bin/archway', ['api']);
    expect(piped).toMatch(/^\{"level":30,.*"msg":"api listening"/m);
    expect(piped).not.toMatch(/incoming request|request completed/);
  });
});
