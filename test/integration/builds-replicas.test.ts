import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { beforeAll, describe, expect, it } from 'vitest';
import { createUploads } from '../../src/api/builds/uploads.ts';
import { type ApiProcess, runApi } from '../../src/api/index.ts';
import { makeTreeBundle } from '../../src/cli/tree-bundle.ts';
import { createLogger, poolLayout } from '../../src/core/index.ts';
import { startCluster, type TestCluster } from '../support/cluster.ts';
import { checkLeftovers } from '../support/leak-check.ts';
import { eventually, testConfig } from '../support/test-host.ts';

// Two API replicas on one Redis, each with its own upload directory, as behind a load balancer.
// Replica A takes the uploads; its ARCHWAY_PUBLIC_URL is replica B's address, so the workers'
// fetches of A's uploads land on B (what a proxy spreading requests does).
const token = `t-${randomBytes(12).toString('hex')}`;
let c: TestCluster;
let a: ApiProcess;
let b: ApiProcess;
let redis: Redis;
let work: string;

async function call(
  api: ApiProcess,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
) {
  const res = await fetch(`${api.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body !== undefined && !(body instanceof Buffer) ? { 'content-type': 'application/json' } : {}),
      ...headers,
    },
    ...(body === undefined ? {} : { body: body instanceof Buffer ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  // biome-ignore lint/suspicious/noExplicitAny: the answers' shapes are what the tests check
  return { status: res.status, json: (text ? JSON.parse(text) : undefined) as Record<string, any> };
}

async function uploadTree(api: ApiProcess, files: Record<string, string>) {
  const dir = await mkdtemp(join(work, 'tree-'));
  for (const [p, t] of Object.entries(files)) await writeFile(join(dir, p), t);
  const r = await call(api, 'POST', '/v1/uploads', (await makeTreeBundle(dir)).bundle, {
    'content-type': 'application/x-git-bundle',
  });
  expect(r.status).toBe(201);
  return r.json as { id: string; sha: string };
}

async function finished(api: ApiProcess, id: string) {
  let view: Record<string, unknown> = {};
  await eventually(
    async () => {
      view = (await call(api, 'GET', `/v1/builds/${id}`)).json;
      return ['passed', 'failed', 'canceled'].includes(String(view.state));
    },
    `build ${id} finished`,
    90_000,
  );
  return view as { state: string; jobs: { id: string }[] };
}

async function logOf(api: ApiProcess, job: string): Promise<string> {
  return (
    await fetch(`${api.url}/v1/jobs/${job}/log`, { headers: { authorization: `Bearer ${token}` } })
  ).text();
}

/** A free port of this suite's range (21100-21199): the replicas' addresses are set before they listen. */
async function freePort(): Promise<number> {
  for (let port = 21100 + Math.floor(Math.random() * 50); port < 21200; port++) {
    const free = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port in 21100-21199');
}

const CONFIG = 'language: shell\nimage: busybox\narch: amd64\nscript: cat greeting.txt\n';

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'archway-replicas-'));
  c = await startCluster();
  redis = new Redis(c.redis.url);
  await c.addWorker('amd64', { slots: 2, warm: 0, allowLoopbackSources: false });
  const [pa, pb] = [await freePort(), await freePort()];
  const base = {
    REDIS_URL: c.redis.url,
    ARCHWAY_REDIS_PREFIX: c.keys.prefix,
    ARCHWAY_TOKEN: token,
    ARCHWAY_HOST: '127.0.0.1',
    ARCHWAY_LOG_LEVEL: process.env.ARCHWAY_TEST_LOG_LEVEL ?? 'warn',
    ARCHWAY_EGRESS: 'false',
  };
  a = await runApi(
    {
      ...base,
      ARCHWAY_PORT: String(pa),
      ARCHWAY_REPLICA_URL: `http://127.0.0.1:${pa}`,
      ARCHWAY_PUBLIC_URL: `http://127.0.0.1:${pb}`,
      ARCHWAY_UPLOAD_DIR: join(work, 'uploads-a'),
    },
    { handleSignals: false },
  );
  b = await runApi(
    {
      ...base,
      ARCHWAY_PORT: String(pb),
      ARCHWAY_REPLICA_URL: `http://127.0.0.1:${pb}`,
      ARCHWAY_UPLOAD_DIR: join(work, 'uploads-b'),
    },
    { handleSignals: false },
  );
}, 120_000);

checkLeftovers(
  'all',
  () => a?.close(),
  () => b?.close(),
  () => redis?.quit(),
  () => c?.close(),
  async () => {
    for (const api of [a, b])
      if (api)
        await rm(poolLayout(testConfig().ARCHWAY_POOL_PATH).gitMirrorsOf(new URL(api.url).host), {
          recursive: true,
          force: true,
        });
  },
  () => work && rm(work, { recursive: true, force: true }),
);

describe('uploads across API replicas', () => {
  it("a worker fetches a replica's upload through another replica, which fetches it from the first", async () => {
    const up = await uploadTree(a, { '.travis.yml': CONFIG, 'greeting.txt': 'hello through replica B\n' });
    expect(await readdir(join(work, 'uploads-b')).catch(() => [])).not.toContain(`${up.id}.git`);
    const created = await call(a, 'POST', '/v1/builds', { source: { upload: up.id } });
    expect(created.status).toBe(201);
    expect(created.json.build.source.git).toBe(`${b.url}/git/uploads/${up.id}.git`);
    const done = await finished(a, created.json.build.id);
    expect(done.state).toBe('passed');
    expect(await logOf(a, done.jobs[0]?.id ?? '')).toContain('hello through replica B');
    // B now holds a copy, fetched from A.
    expect(await readdir(join(work, 'uploads-b'))).toContain(`${up.id}.git`);
  }, 120_000);

  it('a build submitted to another replica reads the config from the upload it fetches', async () => {
    const up = await uploadTree(a, { '.travis.yml': CONFIG, 'greeting.txt': 'built by B\n' });
    const created = await call(b, 'POST', '/v1/builds', { source: { upload: up.id } });
    expect(created.status).toBe(201);
    expect(created.json.build.config).toBe('.travis.yml');
    const done = await finished(b, created.json.build.id);
    expect(done.state).toBe('passed');
    expect(await logOf(b, done.jobs[0]?.id ?? '')).toContain('built by B');
    // A restart through either replica finds the tree.
    expect((await call(a, 'POST', `/v1/builds/${created.json.build.id}/restart`)).status).toBe(202);
    expect((await finished(a, created.json.build.id)).state).toBe('passed');
  }, 120_000);

  it('answers 503 naming the holder when it cannot be reached, and queues nothing', async () => {
    const up = await uploadTree(a, { '.travis.yml': CONFIG, 'greeting.txt': 'x\n' });
    // As if replica A had gone: its address answers nothing.
    const gone = `http://127.0.0.1:${await freePort()}`;
    await redis.hset(c.keys.upload(up.id), 'holder', gone);
    const jobs = (await c.queue.list({ limit: 100 })).jobs.length;
    const r = await call(b, 'POST', '/v1/builds', { source: { upload: up.id } });
    expect(r.status).toBe(503);
    expect(r.json.error.code).toBe('UPLOAD_UNAVAILABLE');
    expect(r.json.error.message).toContain(gone);
    expect((await c.queue.list({ limit: 100 })).jobs.length).toBe(jobs);
    expect(await readdir(join(work, 'uploads-b'))).not.toContain(`${up.id}.git`);
    // The workers' fetch through B gets a 503 too, not a tree.
    const refs = await fetch(`${b.url}/git/uploads/${up.id}.git/info/refs?service=git-upload-pack`);
    expect(refs.status).toBe(503);
  });

  it('adopts an upload its replica took before uploads had records', async () => {
    const up = await uploadTree(a, { '.travis.yml': CONFIG, 'greeting.txt': 'from before records\n' });
    await redis.del(c.keys.upload(up.id));
    const created = await call(a, 'POST', '/v1/builds', { source: { upload: up.id } });
    expect(created.status).toBe(201);
    expect(await redis.hget(c.keys.upload(up.id), 'holder')).toBe(a.url);
    expect(await redis.ttl(c.keys.upload(up.id))).toBeGreaterThan(29 * 86_400);
    expect((await finished(a, created.json.build.id)).state).toBe('passed');
  }, 120_000);

  it("a replica's copy goes in its sweep once the upload was removed (by the replica that held it)", async () => {
    const up = await uploadTree(a, { '.travis.yml': CONFIG, 'greeting.txt': 'y\n' });
    const dir = join(work, 'uploads-c');
    await mkdir(dir);
    const cReplica = createUploads({
      dir,
      redis,
      keys: c.keys,
      selfUrl: () => 'http://127.0.0.1:1',
      limitBytes: 1024 * 1024,
      unusedTtlMs: 3_600_000,
      logger: createLogger({ name: 'replica-c', level: 'silent' }),
    });
    expect(await cReplica.get(up.id)).toEqual({ id: up.id, sha: up.sha, sizeBytes: expect.any(Number) });
    expect(await readdir(dir)).toEqual(expect.arrayContaining([`${up.id}.git`, `${up.id}.json`]));
    expect(await cReplica.sweep()).toEqual([]);
    // Removed where it was held (its record goes with it): the copy goes at the next sweep.
    await redis.del(c.keys.upload(up.id));
    expect(await cReplica.get(up.id)).toBeUndefined();
    expect(await cReplica.sweep(Date.now() + 120_000)).toEqual([up.id]);
    expect(await readdir(dir)).toEqual([]);
  });
});
