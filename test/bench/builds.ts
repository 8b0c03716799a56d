/**
 * Builds: from `archway build DIR` (a subprocess, the real CLI) to the first prefixed log line of
 * the first job, for a tree of about 10 MB; and from `POST /v1/builds` with a git source (a local
 * git server over HTTP) to the first log line of its job at a following client, with the config
 * inline and read by the API from the source. amd64, busybox,
 * the API and an amd64 worker in this process on a real Redis and the test pool.
 *
 *   npm run bench:builds    (as root; ARCHWAY_BENCH_RUNS=10 ARCHWAY_BENCH_TREE_MB=10; the pool and
 *                            uid settings come from ARCHWAY_TEST_* as for the tests)
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { runApi } from '../../src/api/index.ts';
import { poolLayout } from '../../src/core/index.ts';
import { startCluster } from '../support/cluster.ts';
import { startFakeGitHub } from '../support/fake-github.ts';
import { TEST_ENV, testConfig } from '../support/test-host.ts';
import { machine, ms, summarize } from './stats.ts';

const RUNS = Number(process.env.ARCHWAY_BENCH_RUNS ?? 10);
const TREE_MB = Number(process.env.ARCHWAY_BENCH_TREE_MB ?? 10);
const BIN = new URL('../../bin/archway', import.meta.url).pathname;
const CONFIG = 'language: shell\nimage: busybox\narch: amd64\nscript: echo first-line\n';

const say = (line = '') => process.stderr.write(`${line}\n`);
const token = `bench-${randomBytes(12).toString('hex')}`;
const work = await mkdtemp(join(tmpdir(), 'archway-bench-builds-'));
const cluster = await startCluster();
const gh = await startFakeGitHub();
await cluster.addWorker('amd64', { slots: 2, warm: 1 });
const api = await runApi(
  {
    REDIS_URL: cluster.redis.url,
    ARCHWAY_REDIS_PREFIX: cluster.keys.prefix,
    ARCHWAY_TOKEN: token,
    ARCHWAY_PORT: '0',
    ARCHWAY_LOG_LEVEL: 'warn',
    ARCHWAY_ALLOW_LOOPBACK_SOURCES: '1',
    ARCHWAY_UPLOAD_DIR: join(work, 'uploads'),
    ARCHWAY_EGRESS: 'false',
  },
  { handleSignals: false },
);

/** Until the first line of stdout that contains `needle`, in ms from the start of the command. */
function firstLine(args: string[], needle: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(BIN, args, {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        ...TEST_ENV,
        ARCHWAY_URL: api.url,
        ARCHWAY_TOKEN: token,
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    let at = 0;
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!at && out.includes(needle)) at = performance.now() - t0;
    });
    p.on('exit', (code) => (at && code === 0 ? resolve(at) : reject(new Error(`exit ${code}: ${out}`))));
  });
}

// The load average (1 min) over the run, sampled every 2 s: the machine is shared.
const loads: number[] = [];
const sampler = setInterval(() => loads.push(loadavg()[0] ?? 0), 2000);

/** Submits a build and follows its first job's log: ms to its first line. */
async function gitBuild(body: unknown): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(`${api.url}/v1/builds`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (res.status !== 201) throw new Error(`POST /v1/builds: ${res.status} ${await res.text()}`);
  const { build } = (await res.json()) as { build: { jobs: { id: string }[] } };
  const log = await fetch(`${api.url}/v1/jobs/${build.jobs[0]?.id}/log?follow=1`, {
    headers: { authorization: `Bearer ${token}` },
  });
  const reader = (log.body as ReadableStream<Uint8Array>).getReader();
  let text = '';
  let at = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += Buffer.from(value).toString();
    if (!at && text.includes('first-line\n')) at = performance.now() - t0;
  }
  if (!at) throw new Error(`no first line: ${text}`);
  return at;
}

try {
  say(`### Builds, ${new Date().toISOString().slice(0, 10)}`);
  say();
  say(`Machine: ${await machine()}.`);
  say();
  // A tree of TREE_MB in 100 files of random bytes (they do not compress), plus the config.
  const dir = join(work, 'tree');
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, '.travis.yml'), CONFIG);
  for (let i = 0; i < 100; i++)
    await writeFile(join(dir, `f${i}.bin`), randomBytes((TREE_MB * 1024 * 1024) / 100));
  const upload: number[] = [];
  for (let i = 0; i < RUNS + 1; i++) {
    const t = await firstLine(['build', dir], '] first-line');
    if (i > 0) upload.push(t);
  }
  // The CLI's own start (Node and tsx loading the code), the floor of the first row.
  const start: number[] = [];
  for (let i = 0; i < RUNS + 1; i++) {
    const t = await firstLine(['help'], 'Usage');
    if (i > 0) start.push(t);
  }
  const repo = await gh.createRepo('bench/widget', { private: false });
  const git: number[] = [];
  for (let i = 0; i < RUNS + 1; i++) {
    // A new commit each time: the worker's mirror fetches what it lacks, as for a push.
    const sha = await repo.commit({ 'run.txt': `${i}\n` });
    const t = await gitBuild({ source: { git: repo.cloneUrl, sha }, config: CONFIG });
    if (i > 0) git.push(t);
  }
  // The same with the config read by the API from the source at the ref (a shallow fetch on the API host).
  const read: number[] = [];
  for (let i = 0; i < RUNS + 1; i++) {
    await repo.commit({ '.travis.yml': CONFIG, 'run.txt': `read ${i}\n` });
    const t = await gitBuild({ source: { git: repo.cloneUrl, ref: 'main' } });
    if (i > 0) read.push(t);
  }
  say(
    `From the start to the first log line of the build's job (\`echo first-line\`, busybox, amd64, a warm container); ${RUNS} builds per row, one at a time, after one warm-up; ms.`,
  );
  say();
  say('| source | min | p50 | p90 | max |');
  say('| --- | --- | --- | --- | --- |');
  const row = (what: string, samples: number[]) => {
    const s = summarize(samples);
    say(`| ${what} | ${ms(s.min)} | ${ms(s.p50)} | ${ms(s.p90)} | ${ms(s.max)} |`);
  };
  row(`\`archway build DIR\`, ${TREE_MB} MB tree (CLI process start, pack, upload, build, follow)`, upload);
  row('`archway help` (the CLI process start alone, for scale)', start);
  row('`POST /v1/builds` with a git source (a new commit each time), followed over HTTP', git);
  row('the same, the config read by the API from the source (`ref`, no inline `config`)', read);
  say();
  const l = summarize(loads);
  say(
    `Load average (1 min) during the run: min ${l.min.toFixed(1)}, p50 ${l.p50.toFixed(1)}, max ${l.max.toFixed(1)}.`,
  );
} finally {
  clearInterval(sampler);
  await api.close();
  await cluster.close();
  await gh.close();
  // The worker's mirrors of the uploads and of the git server.
  for (const host of [new URL(api.url).host, gh.host])
    await rm(poolLayout(testConfig().ARCHWAY_POOL_PATH).gitMirrorsOf(host), { recursive: true, force: true });
  await rm(work, { recursive: true, force: true });
}
