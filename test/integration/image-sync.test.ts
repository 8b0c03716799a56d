import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { open, readdir, readFile, readlink, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  blobPath,
  createImageStore,
  createSyncAgent,
  type ImageStore,
  imageForRange,
  publishImage,
  rangeCopiesOf,
  type SyncAgent,
  type SyncAgentEvents,
  sweepBlobs,
} from '../../images/index.ts';
import { createImageCatalog, type ImageCatalog, type NodeRegistry } from '../../queue/index.ts';
import type { ApiApp } from '../../src/api/index.ts';
import {
  createKeys,
  createLogger,
  ensurePool,
  exists,
  type Keys,
  poolLayout,
  runCommand,
} from '../../src/core/index.ts';
import {
  type ContainerRuntime,
  createJobLauncher,
  createRuncRuntime,
  type JobLauncher,
  runtimeOptionsFrom,
} from '../../workers/index.ts';
import { makeVersion, removeImage } from '../support/image-versions.ts';
import { startRedis, type TestRedis } from '../support/redis-server.ts';
import { startTestApi, type TestApi } from '../support/test-api.ts';
import { collect, eventually, leftovers, testConfig } from '../support/test-host.ts';
import { testNode } from '../support/test-node.ts';

/** The "remote" worker's pool: a second loop-backed btrfs filesystem, so sync crosses filesystems. */
const SYNC_POOL = `${process.env.ARCHWAY_TEST_POOL ?? '/var/lib/archway-test'}-sync`;
/** Its OCI runtime state of its own: a runtime reaps what it finds in its state dir and not in its pool. */
const SYNC_RUN_DIR = `${process.env.ARCHWAY_TEST_RUN_DIR ?? '/run/archway-test'}-sync`;
const ADMIN = `admin-${randomBytes(12).toString('hex')}`;
const SYNC_TOKEN = `sync-${randomBytes(12).toString('hex')}`;
const ARCH = 'amd64';
const tag = randomBytes(3).toString('hex');
/** Test images on the publishing side (the test pool), each a copy of busybox. */
const IMG = { main: `bbsync-${tag}`, corrupt: `bbsync-bad-${tag}`, orphan: `bbsync-full-${tag}` };

// Silent by default: the corrupt blobs this file serves on purpose are logged as errors.
const logger = createLogger({
  name: 'image-sync-test',
  level: process.env.ARCHWAY_TEST_LOG_LEVEL ?? 'silent',
});
let server: TestRedis;
let redis: Redis;
let keys: Keys;
let catalog: ImageCatalog;
let nodes: NodeRegistry;
let api: TestApi;
let app: ApiApp;
let apiUrl: string;
let blobDir: string;
let pubStore: ImageStore;
let syncStore: ImageStore;
let runtime: ContainerRuntime;
let launcher: JobLauncher;
const agents: SyncAgent[] = [];
const workers: ChildProcess[] = [];

function startAgent(o: { nodeId?: string } = {}): SyncAgent {
  const blocking = new Redis(server.url, { maxRetriesPerRequest: null });
  blocking.on('error', () => undefined);
  const agent = createSyncAgent({
    arch: ARCH,
    store: syncStore,
    catalog,
    blockingRedis: blocking,
    apiUrl,
    token: SYNC_TOKEN,
    logger,
    inUse: () => runtime.imagesInUse(),
    idRange: (k) => {
      const { ARCHWAY_UID_BASE: base, ARCHWAY_UID_SIZE: size } = testConfig();
      return { index: k, shift: k * size, hostId: base + k * size };
    },
    retireAfterMs: 300,
    blockMs: 1000,
    ...(o.nodeId ? { report: (held) => nodes.setImages(o.nodeId as string, held) } : {}),
  });
  agents.push(agent);
  return agent;
}

/** The next event `name` from the agent that matches. */
function next<K extends keyof SyncAgentEvents>(
  agent: SyncAgent,
  name: K,
  match: (e: SyncAgentEvents[K][0]) => boolean,
): Promise<SyncAgentEvents[K][0]> {
  return new Promise((resolve) => {
    const on = (...args: SyncAgentEvents[K]) => {
      if (!match(args[0])) return;
      agent.events.off(name, on as never);
      resolve(args[0]);
    };
    agent.events.on(name, on as never);
  });
}

const sha256File = async (path: string) =>
  `sha256:${createHash('sha256')
    .update(await readFile(path))
    .digest('hex')}`;

/** Every subvolume of the sync pool, by path. */
async function syncSubvolumes(): Promise<string[]> {
  const out = await runCommand('btrfs', ['subvolume', 'list', '-o', SYNC_POOL]);
  return out
    .split('\n')
    .map((l) => l.match(/ path (.+)$/)?.[1])
    .filter((p): p is string => p !== undefined);
}

beforeAll(async () => {
  server = await startRedis();
  redis = new Redis(server.url, { maxRetriesPerRequest: null });
  redis.on('error', () => undefined);
  keys = createKeys(`sync${tag}`);
  catalog = createImageCatalog(redis, keys);
  const pool = testConfig().ARCHWAY_POOL_PATH;
  blobDir = join(pool, `blobs-${tag}`);
  pubStore = createImageStore({ poolPath: pool });
  api = await startTestApi({
    name: 'sync',
    redis: { url: server.url, client: redis, keys },
    env: { ARCHWAY_TOKEN: ADMIN, ARCHWAY_TOKENS: `sync:read:${SYNC_TOKEN}`, ARCHWAY_BLOB_DIR: blobDir },
    listen: true,
  });
  ({ nodes, app, url: apiUrl } = api);

  await ensurePool({ path: SYNC_POOL, loopSizeGiB: 4, logger });
  syncStore = createImageStore({ poolPath: SYNC_POOL });
  const c = testConfig();
  runtime = await createRuncRuntime({
    ...runtimeOptionsFrom(c, ARCH, logger),
    poolPath: SYNC_POOL,
    runDir: SYNC_RUN_DIR,
    ociRuntime: c.ARCHWAY_OCI_RUNTIME,
    cgroupParent: c.ARCHWAY_CGROUP_PARENT,
    initPath: c.ARCHWAY_INIT,
    idBase: c.ARCHWAY_UID_BASE,
    idSize: c.ARCHWAY_UID_SIZE,
    seccompProfile: c.ARCHWAY_SECCOMP_PROFILE,
    logger,
  });
  launcher = createJobLauncher({ runtime, images: syncStore, logger });
  // Each test image starts as busybox's current version, copied under its own name.
  const busybox = await pubStore.resolve('busybox', ARCH);
  for (const name of Object.values(IMG)) await makeVersion(pubStore, name, ARCH, busybox);
});

afterAll(async () => {
  for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL');
  await Promise.all(agents.map((a) => a.close()));
  await launcher?.close();
  await api?.close();
  for (const name of Object.values(IMG)) {
    if (pubStore) await removeImage(pubStore, name);
    if (syncStore) await removeImage(syncStore, name);
  }
  await rm(blobDir, { recursive: true, force: true });
  if (runtime) {
    await runtime.reap({});
    const listed = await runCommand(runtime.ociRuntime, [
      '--root',
      join(SYNC_RUN_DIR, runtime.ociRuntime),
      'list',
      '-q',
    ]);
    expect(listed.trim(), 'containers left on the sync pool').toBe('');
    expect(await readdir(poolLayout(SYNC_POOL).bundles)).toEqual([]);
  }
  await rm(SYNC_RUN_DIR, { recursive: true, force: true });
  redis?.disconnect();
  await server?.stop();
  // The second pool goes entirely: unmounted, and its loop file deleted.
  await runCommand('umount', [SYNC_POOL]).catch(() => undefined);
  await rm(`${SYNC_POOL}.btrfs`, { force: true });
  await rm(SYNC_POOL, { recursive: true, force: true });
  expect(await leftovers()).toEqual([]);
});

describe('image sync', () => {
  it('publishes v1 full and v2 incremental; a worker on another pool receives both, switches, and removes v1 once no job uses it', async () => {
    const name = IMG.main;
    const first = await publishImage(name, ARCH, { store: pubStore, catalog, blobDir, logger });
    expect(first.published).toBe(true);
    const v1 = first.entry;
    expect(v1).toMatchObject({ name, arch: ARCH, parent: null, incremental: null });
    // Content-addressed: the file's sha256 is its name, its size the catalog's.
    const fullFile = blobPath(blobDir, v1.full.digest);
    expect(await sha256File(fullFile)).toBe(v1.full.digest);
    expect((await stat(fullFile)).size).toBe(v1.full.sizeBytes);
    // Publishing the same version again writes nothing.
    expect((await publishImage(name, ARCH, { store: pubStore, catalog, blobDir, logger })).published).toBe(
      false,
    );

    await nodes.register(testNode('remote', ARCH, { hostArch: 'x64', emulated: false, slots: 1 }));
    const agent = startAgent({ nodeId: 'remote' });
    const gotV1 = next(agent, 'image:synced', (e) => e.name === name);
    await agent.start();
    expect(await gotV1).toMatchObject({ digest: v1.digest, kind: 'full' });
    const held1 = await syncStore.resolve(name, ARCH);
    expect(held1.digest).toBe(v1.digest);
    expect(await runCommand('btrfs', ['property', 'get', '-ts', held1.path, 'ro'])).toBe('ro=true');
    expect((await stat(join(held1.path, 'bin/busybox'))).uid).toBe(testConfig().ARCHWAY_UID_BASE);
    // A container of uid range 1 made v1's copy for that range; it must go with v1.
    const { ARCHWAY_UID_BASE: base, ARCHWAY_UID_SIZE: size } = testConfig();
    const copy = await imageForRange(held1, { index: 1, shift: size, hostId: base + size });
    expect((await stat(join(copy, 'bin/busybox'))).uid).toBe(base + size);

    // A job runs on v1 while v2 arrives.
    const job = await launcher.launch({
      jobId: `sync-${tag}`,
      image: name,
      argv: ['sh', '-c', 'sleep 3; echo done'],
    });
    const outcome = collect(job);

    const pubV1 = await pubStore.resolve(name, ARCH);
    const pubV2 = await makeVersion(pubStore, name, ARCH, pubV1, {
      'etc/archway-v2': 'the second version\n',
      'usr/share/v2/data.bin': randomBytes(256 * 1024),
    });
    const synced = next(agent, 'image:synced', (e) => e.digest === pubV2.digest);
    const removed = next(agent, 'image:removed', (e) => e.digest === v1.digest);
    const v2 = (await publishImage(name, ARCH, { store: pubStore, catalog, blobDir, logger })).entry;
    expect(v2.parent).toBe(v1.digest);
    expect(v2.incremental).not.toBeNull();
    const incrementalBytes = v2.incremental?.sizeBytes ?? 0;
    expect(incrementalBytes).toBeLessThan(v2.full.sizeBytes / 2);
    expect(await sha256File(blobPath(blobDir, v2.incremental?.digest ?? ''))).toBe(v2.incremental?.digest);

    expect(await synced).toMatchObject({ kind: 'incremental', blob: v2.incremental });
    const dir = syncStore.dirOf(name, ARCH);
    expect(await readlink(join(dir, 'current'))).toBe(v2.digest);
    const held2 = await syncStore.resolve(name, ARCH);
    // v2 came with its copy for the range v1 had one for, made before it became current.
    expect(await rangeCopiesOf(held2.path)).toEqual([1]);
    expect((await stat(join(`${held2.path}.ranges`, '1', 'bin/busybox'))).uid).toBe(base + size);
    expect(await readFile(join(held2.path, 'etc/archway-v2'), 'utf8')).toBe('the second version\n');
    expect((await stat(join(held2.path, 'usr/share/v2/data.bin'))).size).toBe(256 * 1024);

    // v1 stays while the job that uses it runs (well past the retire delay)...
    await new Promise((r) => setTimeout(r, 1000));
    expect(await exists(join(dir, v1.digest))).toBe(true);
    expect((await outcome).output).toBe('done\n');
    // ...and goes once it is unused.
    expect(await removed).toMatchObject({ digest: v1.digest });
    expect(await exists(join(dir, v1.digest))).toBe(false);
    expect(await exists(join(dir, `${v1.digest}.json`))).toBe(false);
    expect(await exists(join(dir, `${v1.digest}.ranges`))).toBe(false);

    await eventually(
      async () =>
        isDeepStrictEqual((await nodes.get('remote'))?.images, [
          { name, arch: ARCH, digest: v2.digest, current: true },
        ]),
      'the node record to show v2 only',
    );
    const res = await app.inject({
      method: 'GET',
      url: '/v1/images',
      headers: { authorization: `Bearer ${SYNC_TOKEN}` },
    });
    expect(res.statusCode).toBe(200);
    const status = (
      res.json() as { images: { name: string; current: { digest: string }; versions: unknown[] }[] }
    ).images.find((i) => i.name === name);
    expect(status?.current.digest).toBe(v2.digest);
    expect(status?.versions).toEqual([
      { digest: v2.digest, current: true, nodes: [{ id: 'remote', current: true, lost: false }] },
    ]);
    await nodes.deregister('remote');
    await agent.close();
  });

  it('serves blobs immutable, with Range requests, 304, 404 naming the digest and 400 for a malformed one', async () => {
    const entry = await catalog.current(IMG.main, ARCH);
    const blob = entry?.full;
    if (!blob) throw new Error('no published blob');
    const auth = { authorization: `Bearer ${SYNC_TOKEN}` };
    const url = `/v1/images/blobs/${blob.digest}`;
    const whole = await app.inject({ method: 'GET', url, headers: auth });
    expect(whole.statusCode).toBe(200);
    expect(whole.headers['cache-control']).toBe('public, max-age=31536000, immutable');
    expect(whole.headers.etag).toBe(`"${blob.digest}"`);
    expect(whole.headers['accept-ranges']).toBe('bytes');
    expect(Number(whole.headers['content-length'])).toBe(blob.sizeBytes);
    expect(`sha256:${createHash('sha256').update(whole.rawPayload).digest('hex')}`).toBe(blob.digest);

    const head = await app.inject({ method: 'HEAD', url, headers: auth });
    expect(head.statusCode).toBe(200);
    expect(Number(head.headers['content-length'])).toBe(blob.sizeBytes);
    expect(head.rawPayload.length).toBe(0);

    const part = await app.inject({ method: 'GET', url, headers: { ...auth, range: 'bytes=10-19' } });
    expect(part.statusCode).toBe(206);
    expect(part.headers['content-range']).toBe(`bytes 10-19/${blob.sizeBytes}`);
    expect(part.rawPayload).toEqual(whole.rawPayload.subarray(10, 20));
    const tail = await app.inject({ method: 'GET', url, headers: { ...auth, range: 'bytes=-5' } });
    expect(tail.statusCode).toBe(206);
    expect(tail.rawPayload).toEqual(whole.rawPayload.subarray(blob.sizeBytes - 5));
    const beyond = await app.inject({
      method: 'GET',
      url,
      headers: { ...auth, range: `bytes=${blob.sizeBytes}-` },
    });
    expect(beyond.statusCode).toBe(416);
    expect(beyond.headers['content-range']).toBe(`bytes */${blob.sizeBytes}`);
    expect(beyond.json()).toMatchObject({ error: { code: 'RANGE_NOT_SATISFIABLE' } });

    const cached = await app.inject({
      method: 'GET',
      url,
      headers: { ...auth, 'if-none-match': `"${blob.digest}"` },
    });
    expect(cached.statusCode).toBe(304);
    expect(cached.rawPayload.length).toBe(0);

    const unknown = `sha256:${'0'.repeat(64)}`;
    const missing = await app.inject({ method: 'GET', url: `/v1/images/blobs/${unknown}`, headers: auth });
    expect(missing.statusCode).toBe(404);
    expect(missing.json()).toEqual({
      error: { code: 'BLOB_NOT_FOUND', message: `no blob ${unknown} in the blob store` },
    });
    expect(missing.headers['cache-control']).toBeUndefined();
    const bad = await app.inject({ method: 'GET', url: '/v1/images/blobs/sha256:xyz', headers: auth });
    expect(bad.statusCode).toBe(400);
    expect(bad.json()).toMatchObject({ error: { code: 'INVALID_INPUT', field: 'digest' } });
    expect((await app.inject({ method: 'GET', url })).statusCode).toBe(401);
  });

  it('rejects a corrupt or truncated blob and leaves nothing in the pool', async () => {
    const name = IMG.corrupt;
    const { entry } = await publishImage(name, ARCH, { store: pubStore, catalog, blobDir, logger });
    const file = blobPath(blobDir, entry.full.digest);
    const original = await readFile(file);
    const checkNothingLeft = async () => {
      expect(await syncStore.resolve(name, ARCH).catch((e: Error) => e.name)).toBe('ImageNotFoundError');
      expect((await syncSubvolumes()).filter((p) => p.includes(name))).toEqual([]);
      expect(await exists(join(syncStore.root, name))).toBe(false);
    };

    // One byte flipped in the middle of the blob file.
    const fh = await open(file, 'r+');
    const at = Math.floor(original.length / 2);
    await fh.write(Buffer.from([(original[at] ?? 0) ^ 0xff]), 0, 1, at);
    await fh.close();
    let agent = startAgent();
    let rejected = next(agent, 'image:rejected', (e) => e.name === name);
    await agent.start();
    expect((await rejected).error).toMatchObject({ code: 'BLOB_DIGEST_MISMATCH' });
    await checkNothingLeft();
    await agent.close();

    // Cut to half its size.
    await truncate(file, Math.floor(original.length / 2));
    agent = startAgent();
    rejected = next(agent, 'image:rejected', (e) => e.name === name);
    await agent.start();
    expect((await rejected).error).toMatchObject({ code: 'BLOB_DIGEST_MISMATCH' });
    await checkNothingLeft();
    await agent.close();
  });

  it('gives a worker that lacks the parent the full version, and the full one when the incremental is corrupt', async () => {
    const name = IMG.orphan;
    await publishImage(name, ARCH, { store: pubStore, catalog, blobDir, logger });
    const pubV1 = await pubStore.resolve(name, ARCH);
    await makeVersion(pubStore, name, ARCH, pubV1, { 'etc/v2': 'v2\n' });
    const v2 = (await publishImage(name, ARCH, { store: pubStore, catalog, blobDir, logger })).entry;
    expect(v2.incremental).not.toBeNull();
    let agent = startAgent();
    const synced = next(agent, 'image:synced', (e) => e.name === name);
    await agent.start();
    // This pool never held v1: v2 arrives whole.
    expect(await synced).toMatchObject({ digest: v2.digest, kind: 'full', blob: v2.full });
    expect((await syncStore.resolve(name, ARCH)).digest).toBe(v2.digest);
    await agent.close();

    // v3's incremental (against v2, which the pool now holds) is damaged: the agent takes v3's full blob.
    const pubV2 = await pubStore.resolve(name, ARCH);
    await makeVersion(pubStore, name, ARCH, pubV2, { 'etc/v3': 'v3\n' });
    const v3 = (await publishImage(name, ARCH, { store: pubStore, catalog, blobDir, logger })).entry;
    expect(v3.parent).toBe(v2.digest);
    await truncate(blobPath(blobDir, v3.incremental?.digest ?? ''), 8);
    agent = startAgent();
    const rejected = next(agent, 'image:rejected', (e) => e.name === name);
    const synced3 = next(agent, 'image:synced', (e) => e.name === name);
    await agent.start();
    expect(await rejected).toMatchObject({ kind: 'incremental', digest: v3.digest });
    expect(await synced3).toMatchObject({ kind: 'full', digest: v3.digest });
    await agent.close();
    expect(await readFile(join((await syncStore.resolve(name, ARCH)).path, 'etc/v3'), 'utf8')).toBe('v3\n');
  });

  it('a worker process syncs at start, reports what it holds, follows new versions, and stops on SIGTERM', async () => {
    const name = IMG.main;
    const c = testConfig();
    const bin = resolve(import.meta.dirname, '../../bin/archway');
    const proc = spawn(bin, ['worker', '--arch', ARCH, '--slots', '1', '--warm', '0'], {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        REDIS_URL: server.url,
        ARCHWAY_REDIS_PREFIX: keys.prefix,
        ARCHWAY_POOL_PATH: SYNC_POOL,
        ARCHWAY_RUN_DIR: SYNC_RUN_DIR,
        ARCHWAY_CGROUP_PARENT: c.ARCHWAY_CGROUP_PARENT,
        ARCHWAY_UID_BASE: String(c.ARCHWAY_UID_BASE),
        ARCHWAY_UID_LEASE_DIR: c.ARCHWAY_UID_LEASE_DIR,
        ARCHWAY_NODE_ID: `sync-worker-${tag}`,
        ARCHWAY_API_URL: apiUrl,
        ARCHWAY_SYNC_TOKEN: SYNC_TOKEN,
        ARCHWAY_LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    workers.push(proc);
    let log = '';
    proc.stderr?.on('data', (d: Buffer) => {
      log += d.toString();
    });
    const nodeId = `sync-worker-${tag}`;
    const current = await catalog.current(name, ARCH);
    const holds = async (digest: string | undefined) =>
      (await nodes.get(nodeId))?.images.some((i) => i.name === name && i.digest === digest && i.current) ??
      false;
    await eventually(() => holds(current?.digest), 'the worker to report the current version', 30_000);

    const pubCur = await pubStore.resolve(name, ARCH);
    await makeVersion(pubStore, name, ARCH, pubCur, { 'etc/v3': 'v3\n' });
    const v3 = (await publishImage(name, ARCH, { store: pubStore, catalog, blobDir, logger })).entry;
    await eventually(() => holds(v3.digest), 'the worker to receive v3', 30_000);
    expect(log).toMatch(/image sync: received and verified/);
    expect(log).toMatch(/"kind":"incremental"/);

    const exited = once(proc, 'exit');
    proc.kill('SIGTERM');
    const [code] = await exited;
    expect(code).toBe(0);
    expect(await readdir(poolLayout(SYNC_POOL).bundles)).toEqual([]);
  });

  it('sweeps the blobs no catalog version names, and crashed writes, once they are an hour old', async () => {
    const dir = join(blobDir, 'sha256');
    const referenced = await catalog.referencedBlobs();
    // Every published version's full and incremental blobs are named.
    expect(referenced.size).toBeGreaterThanOrEqual(2);
    for (const d of referenced) expect(d).toMatch(/^sha256:[0-9a-f]{64}$/);
    const old = new Date(Date.now() - 2 * 3600_000);
    for (const d of referenced) await utimes(blobPath(blobDir, d), old, old);
    const stale = 'f'.repeat(64);
    const young = 'e'.repeat(64);
    const crashed = '.tmp-1-abcdef';
    for (const f of [stale, young, crashed]) await writeFile(join(dir, f), 'x');
    await utimes(join(dir, stale), old, old);
    await utimes(join(dir, crashed), old, old);
    expect((await sweepBlobs(blobDir, referenced)).sort()).toEqual([crashed, stale].sort());
    const left = await readdir(dir);
    expect(left).toContain(young);
    for (const d of referenced) expect(left).toContain(d.replace(/^sha256:/, ''));
  });
});
