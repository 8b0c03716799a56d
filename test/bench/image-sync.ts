/**
 * Image sync benchmark: publish and sync time and bytes of debian-bookworm (amd64), full vs
 * incremental, between two btrfs pools on this host through the real API, Redis and sync agent.
 *
 *   npm run bench:sync          (as root; ARCHWAY_BENCH_RUNS=5, ARCHWAY_BENCH_PACKAGE=python3.11-minimal)
 *
 * v1 is debian-bookworm as built; v2 is v1 plus one Debian package's files (a snapshot of v1 with
 * the package unpacked into it and its owners shifted, as a rebuild on top of v1 would give). Each
 * run publishes v1 then v2 into a fresh catalog and syncs, into an emptied receiving pool: v1
 * whole, then v2 incrementally (the agent holding v1), then v2 whole. Also measured once: the
 * incremental of an independent rebuild (a new mmdebstrap run, sharing no extents with v1).
 * Prints a markdown section; docs/benchmarks.md holds the last one taken on the reference machine.
 */

import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { fetchDebianPackage } from '../../images/apt-fetch.ts';
import {
  buildImage,
  createImageStore,
  createSyncAgent,
  publishImage,
  type ResolvedImage,
  type SyncAgent,
} from '../../images/index.ts';
import { shiftOwners } from '../../images/shift-owners.ts';
import {
  type CatalogEntry,
  createImageCatalog,
  createJobQueue,
  createNodeRegistry,
} from '../../queue/index.ts';
import { buildApp, createApiStores } from '../../src/api/index.ts';
import {
  ApiConfig,
  type Arch,
  createKeys,
  createLogger,
  ensurePool,
  HostConfig,
  ImageNotFoundError,
  parseConfig,
  poolLayout,
  runCommand,
} from '../../src/core/index.ts';
import { makeVersion, removeImage } from '../support/image-versions.ts';
import { startRedis } from '../support/redis-server.ts';
import { machine, summarize } from './stats.ts';

const env: Record<string, string | undefined> = {
  ARCHWAY_POOL_PATH: '/var/lib/archway-bench',
  ARCHWAY_LOG_LEVEL: 'warn',
  ...process.env,
};
const RUNS = Number(env.ARCHWAY_BENCH_RUNS ?? 5);
const PACKAGE = env.ARCHWAY_BENCH_PACKAGE ?? 'python3.11-minimal';
const REBUILD = env.ARCHWAY_BENCH_REBUILD !== '0';
const RECEIVER_POOL = '/var/lib/archway-bench-sync';
const ARCH: Arch = 'amd64';
const BASE = 'debian-bookworm';
const NAME = 'debian-bookworm-syncbench';
const TOKEN = randomBytes(16).toString('hex');

const config = parseConfig(HostConfig, env);
const logger = createLogger({ name: 'bench', level: config.ARCHWAY_LOG_LEVEL });
const say = (s = '') => process.stdout.write(`${s}\n`);
const progress = (s: string) => process.stderr.write(`${s}\n`);

await ensurePool({ path: config.ARCHWAY_POOL_PATH, loopSizeGiB: 16, logger });
const store = createImageStore({ poolPath: config.ARCHWAY_POOL_PATH });
const blobDir = await mkdtemp(join(config.ARCHWAY_POOL_PATH, 'blobs-bench-'));
await ensurePool({ path: RECEIVER_POOL, loopSizeGiB: 8, logger });
const receiver = createImageStore({ poolPath: RECEIVER_POOL });

const redisServer = await startRedis();
const redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
const apiKeys = createKeys('bench');
const queue = createJobQueue({ redis, keys: apiKeys, logRetentionSeconds: 60 });
const app = buildApp(
  parseConfig(ApiConfig, {
    REDIS_URL: redisServer.url,
    ARCHWAY_TOKEN: TOKEN,
    ARCHWAY_BLOB_DIR: blobDir,
  }),
  {
    redis,
    queue,
    nodes: createNodeRegistry(redis, apiKeys),
    ...createApiStores({ redis, keys: apiKeys, queue, nodes: createNodeRegistry(redis, apiKeys) }),
    keys: apiKeys,
    logger: createLogger({ name: 'bench-api', level: 'warn' }),
    createBlockingRedis: () => new Redis(redisServer.url),
  },
);
const apiUrl = await app.listen({ host: '127.0.0.1', port: 0 });

const build = () =>
  buildImage(BASE, ARCH, {
    store,
    cacheDir: poolLayout(config.ARCHWAY_POOL_PATH).cache,
    idBase: config.ARCHWAY_UID_BASE,
    mirror: config.ARCHWAY_DEBIAN_MIRROR,
    logger,
  });

/** Switches the publisher's `current` back to an earlier version. */
async function makeCurrent(image: ResolvedImage): Promise<void> {
  const { path: _path, ...version } = image;
  await store.commit(version);
}

async function cleanup(): Promise<void> {
  await app.close();
  await queue.close();
  redis.disconnect();
  await redisServer.stop();
  await removeImage(store, NAME);
  await removeImage(receiver, NAME);
  await rm(blobDir, { recursive: true, force: true });
  await runCommand('umount', [RECEIVER_POOL]).catch(() => undefined);
  await rm(`${RECEIVER_POOL}.btrfs`, { force: true });
  await rm(RECEIVER_POOL, { recursive: true, force: true });
}

try {
  let base: ResolvedImage;
  try {
    base = await store.resolve(BASE, ARCH);
  } catch (e) {
    if (!(e instanceof ImageNotFoundError)) throw e;
    progress(`building ${BASE} for ${ARCH}...`);
    base = await build();
  }
  // v1: the built image under the benchmark's own name; v2: v1 plus one package's files.
  await removeImage(store, NAME);
  const v1 = await makeVersion(store, NAME, ARCH, base);
  const deb = await fetchDebianPackage(PACKAGE, ARCH, {
    cacheDir: poolLayout(config.ARCHWAY_POOL_PATH).cache,
    mirror: config.ARCHWAY_DEBIAN_MIRROR,
    suite: 'bookworm',
  });
  const unpacked = await mkdtemp(join(config.ARCHWAY_POOL_PATH, 'cache', 'pkg-'));
  let added = 0;
  try {
    await runCommand('dpkg-deb', ['-x', deb, unpacked]);
    added = Number((await runCommand('du', ['-sb', unpacked])).split(/\s/)[0]);
    await shiftOwners(unpacked, config.ARCHWAY_UID_BASE);
    await makeVersion(store, NAME, ARCH, v1, async (root) => {
      await runCommand('cp', ['-a', `${unpacked}/.`, `${root}/`]);
    });
  } finally {
    await rm(unpacked, { recursive: true, force: true });
  }
  const v2 = await store.resolve(NAME, ARCH);

  const samples = { fullV1: [] as number[], incr: [] as number[], fullV2: [] as number[] };
  const publishMs = { v1: [] as number[], v2: [] as number[] };
  let entries: { v1: CatalogEntry; v2: CatalogEntry } | undefined;

  /** A sync agent on the receiving pool following catalog `prefix`; resolves the ms of each version it syncs. */
  function agentFor(prefix: string): SyncAgent {
    const keys = createKeys(prefix);
    const blocking = new Redis(redisServer.url, { maxRetriesPerRequest: null });
    blocking.on('error', () => undefined);
    return createSyncAgent({
      arch: ARCH,
      store: receiver,
      catalog: createImageCatalog(redis, keys),
      blockingRedis: blocking,
      apiUrl,
      token: TOKEN,
      logger,
      retireAfterMs: 0,
      blockMs: 1000,
    });
  }

  for (let run = 0; run < RUNS; run++) {
    progress(`run ${run + 1}/${RUNS}`);
    // Publish v1 then v2 into a fresh catalog (the blobs are rewritten: same bytes, same digests).
    const prefix = `bench${run}`;
    const catalog = createImageCatalog(redis, createKeys(prefix));
    await makeCurrent(v1);
    let t = performance.now();
    const e1 = (await publishImage(NAME, ARCH, { store, catalog, blobDir, logger })).entry;
    publishMs.v1.push(performance.now() - t);
    await makeCurrent(v2);
    t = performance.now();
    const e2 = (await publishImage(NAME, ARCH, { store, catalog, blobDir, logger })).entry;
    publishMs.v2.push(performance.now() - t);
    entries = { v1: e1, v2: e2 };
    if (!e2.incremental) throw new Error('v2 was published without an incremental');

    // Catalog at v2 already: make the agent see v1 first, through a catalog of its own.
    await removeImage(receiver, NAME);
    const first = createImageCatalog(redis, createKeys(`${prefix}a`));
    await first.publish(e1);
    const a = agentFor(`${prefix}a`);
    t = performance.now();
    const synced1 = once(a.events, 'image:synced');
    await a.start();
    await synced1;
    samples.fullV1.push(performance.now() - t);
    const synced2 = once(a.events, 'image:synced');
    t = performance.now();
    await first.publish(e2);
    const [s2] = (await synced2) as [{ kind: string }];
    if (s2.kind !== 'incremental') throw new Error(`v2 synced ${s2.kind}, not incremental`);
    samples.incr.push(performance.now() - t);
    await a.close();

    await removeImage(receiver, NAME);
    const b = agentFor(prefix);
    const synced3 = once(b.events, 'image:synced');
    t = performance.now();
    await b.start();
    const [s3] = (await synced3) as [{ kind: string }];
    if (s3.kind !== 'full') throw new Error(`v2 synced ${s3.kind} into an empty pool`);
    samples.fullV2.push(performance.now() - t);
    await b.close();
  }

  let rebuild: { incr: number; full: number } | undefined;
  if (REBUILD) {
    progress(`rebuilding ${BASE} for ${ARCH} (independent rebuild)...`);
    const catalog = createImageCatalog(redis, createKeys('rebuild'));
    const before = await store.resolve(BASE, ARCH);
    await publishImage(BASE, ARCH, { store, catalog, blobDir, logger });
    const rebuilt = await build();
    const e = (await publishImage(BASE, ARCH, { store, catalog, blobDir, logger })).entry;
    rebuild = { incr: e.incremental?.sizeBytes ?? Number.NaN, full: e.full.sizeBytes };
    // Leave the bench pool as it was: the rebuilt version goes, the earlier one is current again.
    await makeCurrent(before);
    await store.remove(BASE, ARCH, rebuilt.digest);
  }

  if (!entries) throw new Error('no runs');
  const mib = (n: number) => `${(n / 2 ** 20).toFixed(2)} MiB`;
  const secs = (xs: number[]) => {
    const s = summarize(xs);
    return `${(s.p50 / 1000).toFixed(2)} s (${(s.min / 1000).toFixed(2)}-${(s.max / 1000).toFixed(2)})`;
  };
  const rate = (bytes: number, xs: number[]) =>
    `${(bytes / 2 ** 20 / (summarize(xs).p50 / 1000)).toFixed(1)} MiB/s`;
  say(`### Image sync, ${new Date().toISOString().slice(0, 10)}`);
  say();
  say(`Command: \`npm run bench:sync\` (ARCHWAY_BENCH_RUNS=${RUNS}). Machine: ${await machine()}.`);
  say(
    `${BASE} for ${ARCH} (${mib(v1.sizeBytes)} tree); v2 = v1 plus Debian's \`${PACKAGE}\` unpacked into a snapshot of v1 (${mib(added)}).`,
  );
  say(
    'Publisher and receiver are two loop-backed btrfs pools on this host; blobs go through the API over loopback HTTP. Sync time: from the agent starting (full) or from the catalog announcing v2 (incremental) to the new version being current; download, sha256, zstd -d and btrfs receive run as one stream. Median of the runs, (min-max).',
  );
  say();
  say('| transfer | blob (zstd) | sync time | effective |');
  say('| --- | --- | --- | --- |');
  say(
    `| v1 full | ${mib(entries.v1.full.sizeBytes)} | ${secs(samples.fullV1)} | ${rate(entries.v1.full.sizeBytes, samples.fullV1)} |`,
  );
  say(
    `| v2 full | ${mib(entries.v2.full.sizeBytes)} | ${secs(samples.fullV2)} | ${rate(entries.v2.full.sizeBytes, samples.fullV2)} |`,
  );
  say(
    `| v2 incremental (from v1) | ${mib(entries.v2.incremental?.sizeBytes ?? 0)} | ${secs(samples.incr)} | ${rate(entries.v2.incremental?.sizeBytes ?? 0, samples.incr)} |`,
  );
  say();
  say(
    `Publish (\`images publish\`: btrfs send, zstd -3 -T0, sha256, write): v1 (full only) ${secs(publishMs.v1)}; v2 (full and incremental) ${secs(publishMs.v2)}.`,
  );
  if (rebuild)
    say(
      `An independent rebuild of ${BASE} (fresh mmdebstrap, no extents shared with v1): incremental ${mib(rebuild.incr)} against full ${mib(rebuild.full)}.`,
    );
} finally {
  await cleanup();
}
