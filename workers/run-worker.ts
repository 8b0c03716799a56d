import { statfs } from 'node:fs/promises';
import { createServer, type RequestListener, type Server } from 'node:http';
import { hostname } from 'node:os';
import { createImageStore, createSyncAgent, type ImageStore } from '../images/index.ts';
import { createImageCatalog, createJobQueue, createNodeRegistry } from '../queue/index.ts';
import {
  type Arch,
  assertNoEviction,
  ceilingsSet,
  createCloser,
  createKeys,
  createLogger,
  createRedis,
  createWorkerMetrics,
  ensurePool,
  hostCeilings,
  type Limits,
  type Logger,
  limitsWithin,
  listenError,
  type NetworkMode,
  parseConfig,
  WorkerConfig,
  type WorkerMetrics,
} from '../src/core/index.ts';
import type { ContainerRuntime } from './container-runtime.ts';
import type { PackageCacheStats } from './egress-network.ts';
import { createJobLauncher } from './job-launcher.ts';
import { createMirrorSweep } from './mirror-sweep.ts';
import { createRuncRuntime, runtimeOptionsFrom } from './runc-runtime.ts';
import { createSourceFetcher } from './source-fetch.ts';
import { idRangeOf } from './user-namespace.ts';
import { createWarmPool, type WarmPool } from './warm-pool.ts';
import { warmTargetsOf } from './warm-targets.ts';
import { createWorkerDaemon } from './worker-daemon.ts';

export interface RunWorkerOptions {
  env: Record<string, string | undefined>;
  arch: Arch;
  slots: number;
  /** Warm containers kept per image and network mode. */
  warm: number;
  /** Images kept warm, in order of preference (`--warm-images`). Default: `ARCHWAY_WARM_IMAGES`, else every image the node holds. */
  warmImages?: string[];
  version: string;
}

/**
 * The worker process's composition root: config, logger, Redis, the pool, the runtime (after
 * reaping what a previous run left), the warm pool, and the node. The first SIGTERM or SIGINT
 * drains (no new jobs, running ones finish, exit 0); a second one ends the running jobs, which go
 * back to the queue, and exits.
 */
export async function runWorker(o: RunWorkerOptions): Promise<void> {
  const config = parseConfig(WorkerConfig, o.env);
  const logger = createLogger({
    name: 'worker',
    level: config.ARCHWAY_LOG_LEVEL,
    format: config.ARCHWAY_LOG_FORMAT,
  });
  // The metrics port first: a port in use stops the worker before it touches Redis, the pool or a
  // container, with the setting named; until the node is up it answers 503.
  const metricsServer =
    config.ARCHWAY_WORKER_METRICS_PORT > 0
      ? await listenMetrics(config.ARCHWAY_WORKER_METRICS_PORT)
      : undefined;
  try {
    await runNode(o, config, logger, metricsServer);
  } finally {
    if (metricsServer?.server.listening) metricsServer.server.close();
  }
}

/** The node itself, once its metrics port is held: everything `runWorker` says but the port. */
async function runNode(
  o: RunWorkerOptions,
  config: WorkerConfig,
  logger: Logger,
  metricsServer: MetricsServer | undefined,
): Promise<void> {
  const nodeId = config.ARCHWAY_NODE_ID ?? `${hostname()}-${o.arch}-${process.pid}`;
  const redis = createRedis({ url: config.REDIS_URL, name: `archway-worker-${nodeId}`, blocking: true });
  redis.on('error', (err) => logger.warn({ err: err.message }, 'redis connection error'));
  await assertNoEviction(redis);
  await ensurePool({ path: config.ARCHWAY_POOL_PATH, loopSizeGiB: config.ARCHWAY_POOL_SIZE_GIB, logger });
  const images = createImageStore({ poolPath: config.ARCHWAY_POOL_PATH });
  // This host's own ceilings: a job that reached it over them fails as its own mistake.
  const ceilings = hostCeilings({
    poolPath: config.ARCHWAY_POOL_PATH,
    poolSizeGiB: config.ARCHWAY_POOL_SIZE_GIB,
    set: ceilingsSet(config),
  });
  logger.info({ ceilings }, 'ceilings of one job on this node');
  // Every slot may fill its default disk at once; the pool is shared with the other arches' nodes.
  const room = await statfs(config.ARCHWAY_POOL_PATH);
  const need = limitsWithin({}, ceilings).diskMiB * o.slots;
  const free = Math.floor((room.bavail * room.bsize) / 2 ** 20);
  if (need > free)
    logger.warn(
      { slots: o.slots, defaultDiskMiB: need / o.slots, freeMiB: free },
      'the default disk of every slot does not fit the free space of the pool: jobs may fail with ENOSPC (see bin/archway doctor --slots)',
    );
  const runtime = await createRuncRuntime(runtimeOptionsFrom(config, o.arch, logger));
  const reaped = await runtime.reap({});
  if (reaped.length)
    logger.info({ containers: reaped.length }, 'destroyed containers a previous run left behind');
  const keys = createKeys(config.ARCHWAY_REDIS_PREFIX);
  const catalog = createImageCatalog(redis, keys);
  const metrics = createWorkerMetrics({ node: nodeId, arch: o.arch });
  // Image sync first: the node takes jobs, and chooses and makes its warm containers, once it holds
  // the catalog's versions. The sync may switch an image before the warm pool exists.
  let warmPool: WarmPool | undefined;
  const sync = config.ARCHWAY_API_URL
    ? createSyncAgent({
        arch: o.arch,
        store: images,
        catalog,
        blockingRedis: createRedis({
          url: config.REDIS_URL,
          name: `archway-sync-${nodeId}`,
          blocking: true,
        }).on('error', () => undefined),
        apiUrl: config.ARCHWAY_API_URL,
        token: config.ARCHWAY_SYNC_TOKEN,
        logger,
        inUse: () => runtime.imagesInUse(),
        idRange: (k) =>
          idRangeOf(
            {
              base: config.ARCHWAY_UID_BASE,
              size: config.ARCHWAY_UID_SIZE,
              count: config.ARCHWAY_UID_RANGES,
            },
            k,
          ),
        onSwitch: (image) => warmPool?.dropStale(image),
        report: (held) => createNodeRegistry(redis, keys).setImages(nodeId, held),
      })
    : undefined;
  sync?.events.on('image:synced', (e) => {
    metrics.imageSync.observe({ arch: e.arch, image: e.name, kind: e.kind }, e.ms / 1000);
    metrics.imageSyncBytes.inc({ arch: e.arch, image: e.name, kind: e.kind }, e.blob.sizeBytes);
  });
  sync?.events.on('image:rejected', (e) =>
    metrics.imageSyncRejected.inc({ arch: e.arch, image: e.name, kind: e.kind }),
  );
  if (sync) await sync.start();
  else logger.info('image sync off (ARCHWAY_API_URL unset): the node holds only what is built on this host');
  // Egress containers are warm too, network and all: a job with egress starts as fast.
  const networks: NetworkMode[] = runtime.egress ? ['none', 'egress'] : ['none'];
  warmPool =
    o.warm > 0 ? await makeWarmPool(o, config, { runtime, images, networks, ceilings, logger }) : undefined;
  const launcher = createJobLauncher({
    runtime,
    images,
    logger,
    ceilings,
    ...(warmPool ? { warmPool } : {}),
  });
  const queue = createJobQueue({
    redis,
    keys,
    logRetentionSeconds: config.ARCHWAY_LOG_RETENTION_DAYS * 86400,
  });
  const daemon = createWorkerDaemon({
    metrics,
    catalog,
    nodeId,
    arch: o.arch,
    slots: o.slots,
    imageSyncGraceMs: config.ARCHWAY_IMAGE_SYNC_GRACE_SECONDS * 1000,
    launcher,
    images,
    queue,
    nodes: createNodeRegistry(redis, keys),
    keys,
    redis,
    duplicate: () => {
      const c = createRedis({ url: config.REDIS_URL, name: `archway-worker-${nodeId}`, blocking: true });
      c.on('error', () => undefined);
      return c;
    },
    logger,
    logLimitBytes: Math.round(config.ARCHWAY_LOG_LIMIT_MIB * 1024 * 1024),
    timeMultiplier: config.ARCHWAY_TIME_MULTIPLIERS[o.arch] ?? 1,
    logRetentionSeconds: config.ARCHWAY_LOG_RETENTION_DAYS * 86400,
    version: o.version,
    // Without image sync, the node itself says what it holds (the API refuses an image no node has).
    reportImages: !sync,
    source: createSourceFetcher({
      poolPath: config.ARCHWAY_POOL_PATH,
      allowLoopback: config.ARCHWAY_ALLOW_LOOPBACK_SOURCES,
      allow: config.ARCHWAY_SOURCE_ALLOW,
      redis,
      keys,
      logger,
    }),
  });
  warmPool?.start();
  await daemon.start();
  // Every worker of the host sweeps the pool's mirrors; the use locks make that safe.
  const mirrorSweep = createMirrorSweep({
    poolPath: config.ARCHWAY_POOL_PATH,
    retentionMs: config.ARCHWAY_GIT_MIRROR_RETENTION_HOURS * 3_600_000,
    maxBytes: config.ARCHWAY_GIT_MIRROR_MAX_BYTES,
    logger,
  });
  mirrorSweep.start();
  await sync?.reportHeld();
  metricsServer?.serve(
    metricsHandler(
      metrics,
      () => warmPool?.sizes() ?? {},
      o.arch,
      () => runtime.packageCacheStats(),
    ),
  );
  if (metricsServer) logger.info({ port: config.ARCHWAY_WORKER_METRICS_PORT }, 'metrics on /metrics');

  // Order: the node first (no new jobs; the running ones finish, or end on a second signal and go
  // back to the queue; then the warm pool; then it leaves), then image sync, the metrics server,
  // the queue and Redis, which they use. An operator's drain request ends the process the same way.
  const closer = createCloser({
    name: 'worker',
    logger,
    handleSignals: true,
    ...(config.ARCHWAY_STOP_WITH_PID !== undefined ? { parentPid: config.ARCHWAY_STOP_WITH_PID } : {}),
    // No time limit: a drain waits for the running jobs, however long their own limits let them run.
    onSecondSignal: () => daemon.stop(),
    steps: [
      ['node', () => daemon.drain()],
      ['mirror sweep', () => mirrorSweep.close()],
      ['image sync', async () => sync?.close()],
      ['metrics server', async () => metricsServer?.server.close()],
      ['queue', () => queue.close()],
      ['redis', () => redis.quit()],
    ],
  });
  void daemon.stopped.then(() => closer.close());
  await closer.closed;
}

/** The warm pool of the images the node's jobs use (`chooseWarmTargets`), or none when nothing is to be warm. */
async function makeWarmPool(
  o: RunWorkerOptions,
  config: WorkerConfig,
  d: {
    runtime: ContainerRuntime;
    images: ImageStore;
    networks: NetworkMode[];
    ceilings: Limits;
    logger: Logger;
  },
) {
  const chosen = await warmTargetsOf(d.images, o.arch, {
    listed: o.warmImages ?? config.ARCHWAY_WARM_IMAGES,
    warm: o.warm,
    networks: d.networks.length,
    max: config.ARCHWAY_WARM_MAX,
  });
  if (chosen.missing.length)
    d.logger.warn(
      { images: chosen.missing, arch: o.arch },
      'images listed to keep warm are not on this node: their jobs start cold (build or sync them, then restart the worker)',
    );
  if (chosen.cold.length)
    d.logger.warn(
      { images: chosen.cold, max: config.ARCHWAY_WARM_MAX, warm: o.warm, networks: d.networks },
      'ARCHWAY_WARM_MAX leaves these images cold: each warm container holds one of the host uid ranges',
    );
  d.logger.info({ targets: chosen.targets, networks: d.networks }, 'warm containers per image');
  if (chosen.per === 0) return undefined;
  return createWarmPool({
    runtime: d.runtime,
    images: d.images,
    targets: chosen.targets,
    networks: d.networks,
    limits: limitsWithin({}, d.ceilings),
    logger: d.logger,
    // Demand: an image a job asks for joins the pool while ARCHWAY_WARM_MAX has room.
    adopt: { max: config.ARCHWAY_WARM_MAX, per: chosen.per },
  });
}

interface MetricsServer {
  server: Server;
  /** Starts answering /metrics with `handler` (503 before). */
  serve(handler: RequestListener): void;
}

/** The node's /metrics listener on all interfaces of `port`; a port it cannot bind is an error naming the setting. */
async function listenMetrics(port: number): Promise<MetricsServer> {
  let handler: RequestListener | undefined;
  const server = createServer((req, res) => {
    if (handler) handler(req, res);
    else res.writeHead(503).end('the worker is starting\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(listenError(err, 'ARCHWAY_WORKER_METRICS_PORT', `port ${port}`)));
    server.listen(port, resolve);
  });
  return { server, serve: (h) => (handler = h) };
}

/** The node's /metrics for Prometheus. */
function metricsHandler(
  metrics: WorkerMetrics,
  warm: () => Record<string, number>,
  arch: Arch,
  cache: () => Promise<PackageCacheStats | undefined>,
): RequestListener {
  return (req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end('not found: try /metrics\n');
      return;
    }
    for (const [image, n] of Object.entries(warm())) metrics.warmPool.set({ arch, image }, n);
    cache()
      .then((c) => {
        if (!c) return;
        metrics.packageCacheFiles.set({ result: 'hit' }, c.hits);
        metrics.packageCacheFiles.set({ result: 'miss' }, c.misses);
        metrics.packageCacheBytes.set({ direction: 'from_mirror' }, c.bytesIn);
        metrics.packageCacheBytes.set({ direction: 'to_jobs' }, c.bytesOut);
      })
      .catch(() => undefined)
      .then(() => metrics.registry.metrics())
      .then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
  };
}
