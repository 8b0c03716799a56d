import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, stat, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeys, createLogger, type Keys, poolLayout, runCommand } from '../../src/core/index.ts';
import {
  createMirrorSweep,
  createSourceFetcher,
  holdMirror,
  type SourceFetcher,
} from '../../workers/index.ts';
import { type GitHttpServer, startGitHttpServer } from '../support/git-http-server.ts';
import { startRedis, type TestRedis } from '../support/redis-server.ts';
import { testConfig } from '../support/test-host.ts';

let server: TestRedis;
let redis: Redis;
let keys: Keys;
let work: string;
let pool: string;
let git: GitHttpServer;
let slowGit: GitHttpServer;
let fetcher: SourceFetcher;
const logger = createLogger({ name: 'mirror-sweep-test', level: 'silent' });
const env = {
  GIT_AUTHOR_NAME: 't',
  GIT_AUTHOR_EMAIL: 't@t',
  GIT_COMMITTER_NAME: 't',
  GIT_COMMITTER_EMAIL: 't@t',
};
const HOUR = 3_600_000;

/** A bare repository `<name>.git` with one commit of `bytes` random bytes; returns its sha. */
async function repo(name: string, bytes = 1000): Promise<string> {
  const wt = join(work, `wt-${name}`);
  await mkdir(wt, { recursive: true });
  await runCommand('git', ['-C', wt, 'init', '-q', '-b', 'main']);
  await runCommand('dd', [
    'if=/dev/urandom',
    `of=${join(wt, 'data.bin')}`,
    `bs=${bytes}`,
    'count=1',
    'status=none',
  ]);
  await runCommand('git', ['-C', wt, 'add', '-A']);
  await runCommand('git', ['-C', wt, 'commit', '-qm', name], { env });
  await runCommand('git', ['init', '-q', '--bare', join(work, 'repos', `${name}.git`)]);
  await runCommand('git', ['-C', wt, 'push', '-q', join(work, 'repos', `${name}.git`), 'main']);
  return runCommand('git', ['-C', wt, 'rev-parse', 'HEAD']);
}

const shas = new Map<string, string>();
async function place(name: string, via = git) {
  const rootfs = await mkdtemp(join(work, 'rootfs-'));
  return fetcher.place({
    jobId: `j-${name}-${randomBytes(3).toString('hex')}`,
    source: { git: `${via.url}/${name}.git`, sha: shas.get(name) as string },
    rootfs,
    idBase: testConfig().ARCHWAY_UID_BASE,
    signal: new AbortController().signal,
  });
}
const mirrorOf = (name: string, via = git) =>
  join(poolLayout(pool).gitMirrorsOf(new URL(via.url).host), `${name}.git`);
const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );
/** Makes a mirror look last used `hoursAgo` hours ago. */
const age = async (name: string, hoursAgo: number) => {
  const t = new Date(Date.now() - hoursAgo * HOUR);
  await utimes(`${mirrorOf(name)}.use`, t, t);
};

beforeAll(async () => {
  server = await startRedis();
  redis = new Redis(server.url);
  keys = createKeys(`t${randomBytes(3).toString('hex')}`);
  work = await mkdtemp(join(tmpdir(), 'archway-mirror-sweep-'));
  pool = join(testConfig().ARCHWAY_POOL_PATH, 'cache-test', randomBytes(3).toString('hex'));
  await mkdir(join(work, 'repos'), { recursive: true });
  for (const [name, bytes] of [
    ['old', 1000],
    ['older', 1000],
    ['fresh', 1000],
    ['big', 400_000],
    ['slow', 1000],
  ] as const)
    shas.set(name, await repo(name, bytes));
  git = await startGitHttpServer(join(work, 'repos'));
  slowGit = await startGitHttpServer(join(work, 'repos'), { packDelayMs: 1500 });
  fetcher = createSourceFetcher({ poolPath: pool, allowLoopback: true, redis, keys, logger });
});
afterAll(async () => {
  await git?.close();
  await slowGit?.close();
  redis?.disconnect();
  await server?.stop();
  await rm(work, { recursive: true, force: true });
  await rm(pool, { recursive: true, force: true });
});

describe('git mirror sweep', () => {
  it('removes the mirrors unused for longer than the retention, with their lock files; a job fetches a removed one again', async () => {
    for (const n of ['old', 'older', 'fresh']) await place(n);
    await age('old', 30);
    await age('older', 50);
    const sweep = createMirrorSweep({ poolPath: pool, retentionMs: 24 * HOUR, maxBytes: 1024 ** 3, logger });
    expect((await sweep.list()).map((m) => m.path)).toEqual([
      mirrorOf('older'),
      mirrorOf('old'),
      mirrorOf('fresh'),
    ]);
    expect(await sweep.sweep()).toEqual([mirrorOf('older'), mirrorOf('old')]);
    for (const n of ['old', 'older']) {
      expect(await exists(mirrorOf(n))).toBe(false);
      expect(await exists(`${mirrorOf(n)}.use`)).toBe(false);
      expect(await exists(`${mirrorOf(n)}.lock`)).toBe(false);
    }
    expect(await exists(join(mirrorOf('fresh'), 'HEAD'))).toBe(true);
    // Gone from the cache, not from the world: the next job fetches it again.
    const again = await place('old');
    expect(again.mirrorHit).toBe(false);
    expect(again.sha).toBe(shas.get('old'));
    expect((await place('old')).mirrorHit).toBe(true);
    expect(await sweep.sweep()).toEqual([]);
  });

  it('beyond the size cap removes the least recently used first, until the mirrors fit', async () => {
    await place('big');
    const sweep = createMirrorSweep({ poolPath: pool, retentionMs: 24 * HOUR, maxBytes: 1024 ** 3, logger });
    const before = await sweep.list();
    const big = before.find((m) => m.path === mirrorOf('big'));
    expect(big?.bytes).toBeGreaterThan(400_000);
    // Room for the big one and a little: the older small ones go, oldest first; the newest stays.
    await age('fresh', 3);
    await age('old', 2);
    const capped = createMirrorSweep({
      poolPath: pool,
      retentionMs: 24 * HOUR,
      maxBytes: (big?.bytes ?? 0) + 1000,
      logger,
    });
    const removed = await capped.sweep();
    expect(removed[0]).toBe(mirrorOf('fresh'));
    expect(removed).toContain(mirrorOf('old'));
    expect(removed).not.toContain(mirrorOf('big'));
    const left = await capped.list();
    expect(left.map((m) => m.path)).toEqual([mirrorOf('big')]);
    expect(left.reduce((n, m) => n + m.bytes, 0)).toBeLessThanOrEqual((big?.bytes ?? 0) + 1000);
  });

  it('never removes a mirror a job holds: not while it is being fetched, nor while held; after that it goes', async () => {
    const sweepAll = createMirrorSweep({ poolPath: pool, retentionMs: 0, maxBytes: 1024 ** 3, logger });
    // A job still fetching (the server takes 1.5 s to send the pack) holds its mirror.
    const placing = place('slow', slowGit);
    const slowMirror = mirrorOf('slow', slowGit);
    for (let i = 0; i < 100 && !(await exists(join(slowMirror, 'HEAD'))); i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(await exists(join(slowMirror, 'HEAD'))).toBe(true);
    const during = await sweepAll.sweep(Date.now() + HOUR);
    expect(during).not.toContain(slowMirror);
    expect(during).toContain(mirrorOf('big'));
    const placed = await placing;
    expect(placed.sha).toBe(shas.get('slow'));
    expect(await exists(join(slowMirror, 'HEAD'))).toBe(true);
    // Held by hand the same way: kept; released: removed.
    const release = await holdMirror(slowMirror, new AbortController().signal);
    expect(await sweepAll.sweep(Date.now() + HOUR)).toEqual([]);
    release();
    await new Promise((r) => setTimeout(r, 100));
    expect(await sweepAll.sweep(Date.now() + HOUR)).toEqual([slowMirror]);
    expect(await readdir(poolLayout(pool).gitMirrorsOf(new URL(slowGit.url).host))).toEqual([]);
  });
});
