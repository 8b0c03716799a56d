/**
 * GitHub App benchmark, on loopback with real processes where it matters (redis-server, the API
 * of `runApi` with the GitHub App on, a local fake GitHub serving git over smart HTTP):
 *
 * 1. Webhook accept path (verify + dedup + enqueue, answer 202): DELIVERIES signed push
 *    deliveries sent by CONCURRENCY clients; rate and per-request latency. The delivery worker
 *    runs meanwhile (each delivery reads a config the repository does not have: no build).
 * 2. Source fetch of the second build of a repository: the worker's host-side fetch of a new
 *    commit with the host's mirror holding the previous one, vs with no mirror (a full fetch).
 *
 *   npm run bench:webhooks    (as root, for chown; ARCHWAY_BENCH_DELIVERIES=3000
 *                              ARCHWAY_BENCH_CONCURRENCY=8 ARCHWAY_BENCH_RUNS=5 ARCHWAY_BENCH_FILES=3000)
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Webhooks } from '@octokit/webhooks';
import { Redis } from 'ioredis';
import { createSourceCredentials } from '../../queue/index.ts';
import { runApi } from '../../src/api/index.ts';
import { createKeys, createLogger, runCommand } from '../../src/core/index.ts';
import { createSourceFetcher } from '../../workers/index.ts';
import { startFakeGitHub } from '../support/fake-github.ts';
import { startRedis } from '../support/redis-server.ts';
import { BENCH_ENV } from './stack.ts';
import { machine, ms, summarize } from './stats.ts';

const DELIVERIES = Number(process.env.ARCHWAY_BENCH_DELIVERIES ?? 3000);
const CONCURRENCY = Number(process.env.ARCHWAY_BENCH_CONCURRENCY ?? 8);
const RUNS = Number(process.env.ARCHWAY_BENCH_RUNS ?? 5);
const FILES = Number(process.env.ARCHWAY_BENCH_FILES ?? 3000);
const say = (line = '') => process.stderr.write(`${line}\n`);

say(`### GitHub App, ${new Date().toISOString().slice(0, 10)}`);
say();
say(`Machine: ${await machine()}.`);

const redis = await startRedis();
const gh = await startFakeGitHub();
const secret = randomBytes(16).toString('hex');
const prefix = `w${randomBytes(3).toString('hex')}`;
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const api = await runApi(
  {
    REDIS_URL: redis.url,
    ARCHWAY_REDIS_PREFIX: prefix,
    ARCHWAY_TOKEN: randomBytes(20).toString('hex'),
    ARCHWAY_PORT: '0',
    ARCHWAY_LOG_LEVEL: 'error',
    ARCHWAY_GITHUB_APP_ID: '1',
    ARCHWAY_GITHUB_PRIVATE_KEY: privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(),
    ARCHWAY_GITHUB_WEBHOOK_SECRET: `${secret},previous-secret-value`,
    ARCHWAY_GITHUB_API_URL: gh.url,
    ARCHWAY_ALLOW_LOOPBACK_SOURCES: '1',
  },
  { handleSignals: false },
);

try {
  // 1. The accept path.
  const repo = await gh.createRepo('bench/empty');
  const sha = await repo.commit({ 'README.md': 'no config here\n' });
  const webhooks = new Webhooks({ secret });
  const bodies: { id: string; body: string; signature: string }[] = [];
  for (let i = 0; i < DELIVERIES + 200; i++) {
    const body = JSON.stringify({
      ref: 'refs/heads/main',
      before: '0'.repeat(40),
      after: sha,
      created: false,
      deleted: false,
      forced: false,
      commits: [],
      head_commit: { id: sha, message: `commit ${i}` },
      repository: {
        id: repo.id,
        full_name: repo.fullName,
        clone_url: repo.cloneUrl,
        fork: false,
        private: true,
      },
      installation: { id: 1 },
      sender: { login: 'bench' },
      padding: 'x'.repeat(6000),
    });
    bodies.push({ id: randomUUID(), body, signature: await webhooks.sign(body) });
  }
  const send = async (d: (typeof bodies)[number]) => {
    const t0 = performance.now();
    const res = await fetch(`${api.url}/webhooks/github`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-github-event': 'push',
        'x-github-delivery': d.id,
        'x-hub-signature-256': d.signature,
      },
      body: d.body,
    });
    await res.arrayBuffer();
    if (res.status !== 202) throw new Error(`delivery ${d.id}: ${res.status}`);
    return performance.now() - t0;
  };
  // Warm-up (connections, JIT), not counted.
  for (const d of bodies.splice(0, 200)) await send(d);
  const latencies: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < bodies.length) {
        const d = bodies[next++];
        if (d) latencies.push(await send(d));
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const s = summarize(latencies);
  // A redelivery of each is refused without new work.
  const dup = await fetch(`${api.url}/webhooks/github`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-github-event': 'push',
      'x-github-delivery': bodies[0]?.id ?? '',
      'x-hub-signature-256': bodies[0]?.signature ?? '',
    },
    body: bodies[0]?.body ?? '',
  });
  say();
  say(
    `Webhook accept path (\`POST /webhooks/github\`: HMAC-SHA256 verify of a 6.5 KB push payload, dedup SET NX, BullMQ enqueue, 202), ${DELIVERIES} deliveries from ${CONCURRENCY} concurrent keep-alive clients on loopback, after 200 warm-up ones; the delivery worker processes them meanwhile (each reads a config the repository lacks: two contents calls to the fake GitHub).`,
  );
  say();
  say('| deliveries/s | min | p50 | p90 | p99 | max (ms) |');
  say('| --- | --- | --- | --- | --- | --- |');
  say(
    `| ${(latencies.length / seconds).toFixed(0)} | ${ms(s.min)} | ${ms(s.p50)} | ${ms(s.p90)} | ${ms(s.p99)} | ${ms(s.max)} |`,
  );
  say();
  say(`A redelivery of one of them: HTTP ${dup.status}, nothing queued.`);

  // 2. The source fetch of a second build.
  const big = await gh.createRepo('bench/big');
  const files: Record<string, string> = {};
  for (let i = 0; i < FILES; i++) {
    files[`src/dir${i % 50}/file${i}.c`] = `/* file ${i} */\n${randomBytes(1500).toString('base64')}\n`;
  }
  const first = await big.commit(files);
  const client = new Redis(redis.url);
  const keys = createKeys(prefix);
  const logger = createLogger({ name: 'bench', level: 'error' });
  // On btrfs, as a worker's pool is (the bench pool when it exists): file creation on this VM's ext4 is 10x slower.
  const onBtrfs = await runCommand('stat', ['-f', '-c', '%T', BENCH_ENV.ARCHWAY_POOL_PATH]).catch(() => '');
  const base = onBtrfs.trim() === 'btrfs' ? BENCH_ENV.ARCHWAY_POOL_PATH : tmpdir();
  const pool = await mkdtemp(join(base, 'webhooks-bench-'));
  const fetcher = createSourceFetcher({
    poolPath: pool,
    allowLoopback: true,
    redis: client,
    keys,
    logger,
  });
  // The worker's token: as the webhook side stores it.
  const tokenRes = await fetch(`${gh.url}/app/installations/1/access_tokens`, {
    method: 'POST',
    headers: { authorization: 'Bearer eyfake' },
  });
  const { token } = (await tokenRes.json()) as { token: string };
  const jobId = 'jbench';
  await createSourceCredentials(client, keys).put(
    [jobId],
    { host: gh.host, token, installationId: 1, repositoryId: 1, since: Date.now() },
    600_000,
  );
  const place = async (commit: string) => {
    const rootfs = await mkdtemp(join(pool, 'rootfs-'));
    try {
      return await fetcher.place({
        jobId,
        source: { git: big.cloneUrl, ref: 'refs/heads/main', sha: commit },
        rootfs,
        idBase: 100000,
        signal: AbortSignal.timeout(600_000),
      });
    } finally {
      await rm(rootfs, { recursive: true, force: true });
    }
  };
  const mirror = join(pool, 'cache');
  const cold: number[] = [];
  const warm: number[] = [];
  const placeCold: number[] = [];
  const placeWarm: number[] = [];
  const sameCommit: number[] = [];
  let sizeNote = '';
  for (let r = 0; r < RUNS; r++) {
    // Build 1 fills the mirror; then a new commit changes 20 files.
    await rm(mirror, { recursive: true, force: true });
    await place(r === 0 ? first : await big.commit({}));
    const changed: Record<string, string> = {};
    for (let i = 0; i < 20; i++)
      changed[`src/dir${i}/file${i}.c`] = `/* changed ${r} */\n${randomBytes(1500).toString('base64')}\n`;
    const second = await big.commit(changed);
    const w = await place(second);
    warm.push(w.fetchMs);
    placeWarm.push(w.placeMs);
    sameCommit.push((await place(second)).fetchMs);
    await rm(mirror, { recursive: true, force: true });
    const c = await place(second);
    cold.push(c.fetchMs);
    placeCold.push(c.placeMs);
    if (!sizeNote) {
      const du = execFileSync('du', ['-sh', join(pool, 'cache')])
        .toString()
        .split('\t')[0];
      sizeNote = du ?? '';
    }
  }
  await rm(pool, { recursive: true, force: true });
  client.disconnect();
  const med = (xs: number[]) => ms(summarize(xs).p50);
  say();
  say(
    `Source fetch of the second build of a repository (${FILES} files of 2 KB, about ${sizeNote} as a bare mirror; the second commit changes 20 files), through the worker's \`SourceFetcher\` (mirror and tree on ${base === tmpdir() ? 'ext4 (no btrfs bench pool)' : 'the btrfs bench pool'}) with an installation token over git smart HTTP (\`git http-backend\`) on loopback; median of ${RUNS} runs, ms. "fetch" brings the commit into the host's mirror; "place" writes its tree into the container's root filesystem (\`git archive | tar\`, chown to container root).`,
  );
  say();
  say('| second build | fetch | place |');
  say('| --- | --- | --- |');
  say(`| mirror holds the first build's commit | ${med(warm)} | ${med(placeWarm)} |`);
  say(`| no mirror (full fetch) | ${med(cold)} | ${med(placeCold)} |`);
  say(`| mirror already holds the commit (a re-run) | ${med(sameCommit)} | |`);
} finally {
  await api.close();
  await gh.close();
  await redis.stop();
}
// runApi's close leaves reconnect timers of some connection behind (with or without the GitHub App): do not wait for them.
process.exit(0);
