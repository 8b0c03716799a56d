import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import {
  createImageCatalog,
  createJobQueue,
  createNodeRegistry,
  type JobQueue,
  readLog,
} from '../../queue/index.ts';
import { type ApiProcess, runApi } from '../../src/api/index.ts';
import {
  type Arch,
  createKeys,
  createLogger,
  createRedis,
  createWorkerMetrics,
  FINAL_STATES,
  type JobRecord,
  JobSpec,
  type JobSpecInput,
  type Keys,
  type Limits,
  type WorkerMetrics,
} from '../../src/core/index.ts';
import { createSourceFetcher, createWorkerDaemon, type WorkerDaemon } from '../../workers/index.ts';
import { startRedis, type TestRedis } from './redis-server.ts';
import { createTestHost, eventually } from './test-host.ts';

/** A real Redis, a key prefix of the test's own, and in-process worker nodes on the test pool. */
export interface TestCluster {
  redis: TestRedis;
  client: Redis;
  keys: Keys;
  queue: JobQueue;
  workers: WorkerDaemon[];
  /** The metrics of each worker, in the order they were added. */
  metrics: WorkerMetrics[];
  addWorker(
    arch: Arch,
    opts?: {
      slots?: number;
      warm?: number;
      logLimitBytes?: number;
      ceilings?: Partial<Limits>;
      /** The node reports the images it holds with its heartbeat, as a worker without image sync does. */
      reportImages?: boolean;
      /** The arch's factor of ARCHWAY_TIME_MULTIPLIERS. Default 1. */
      timeMultiplier?: number;
      /** How long a catalog version may still be on its way to the node (ARCHWAY_IMAGE_SYNC_GRACE_SECONDS). */
      imageSyncGraceMs?: number;
      /** Sources on the loopback are fetched (a test's local git server). Default true; false as in production and `up`. */
      allowLoopbackSources?: boolean;
    },
  ): Promise<WorkerDaemon>;
  /**
   * Puts a version of an image in the catalog that no node of the test holds, published an hour
   * ago: a node that lacks it then errors for a host reason (its sync is overdue), as a node
   * would whose sync is broken.
   */
  catalogOnly(name: string, arch: Arch): Promise<void>;
  submit(spec: JobSpecInput): Promise<string>;
  waitFinal(id: string, ms?: number): Promise<JobRecord>;
  log(id: string): Promise<string>;
  /**
   * The API as `archway api` runs it (runApi), on this cluster's Redis and keys, on a free
   * loopback port, signals left to the test; `env` adds or overrides settings. Closed by close()
   * if the test has not closed it before.
   */
  startApi(token: string, env?: Record<string, string>): Promise<ApiProcess>;
  /** Closes its APIs, its workers, its queue and its Redis. */
  close(): Promise<void>;
}

/** `redis`: a Redis (or Sentinel set) started by the test; default, one of its own. */
export async function startCluster(o: { redis?: TestRedis } = {}): Promise<TestCluster> {
  const redis = o.redis ?? (await startRedis());
  // Through createRedis, as every archway process connects: a redis+sentinel:// URL works too.
  const connect = (name: string) => {
    const c = createRedis({ url: redis.url, name, blocking: true });
    c.on('error', () => undefined);
    return c;
  };
  const client = connect('test');
  const keys = createKeys(`t${randomBytes(4).toString('hex')}`);
  const queue = createJobQueue({ redis: client, keys, logRetentionSeconds: 600 });
  const catalog = createImageCatalog(client, keys);
  const workers: WorkerDaemon[] = [];
  const apis: ApiProcess[] = [];
  const metrics: WorkerMetrics[] = [];
  const logger = createLogger({ name: 'test-worker', level: process.env.ARCHWAY_TEST_LOG_LEVEL ?? 'warn' });
  return {
    redis,
    client,
    keys,
    queue,
    workers,
    metrics,
    async addWorker(arch, o = {}) {
      const host = await createTestHost(arch, {
        ...(o.warm ? { warm: { busybox: o.warm } } : {}),
        ...(o.ceilings ? { ceilings: o.ceilings } : {}),
      });
      const dup = () => connect('test-worker');
      const nodeId = `test-${arch}-${randomBytes(3).toString('hex')}`;
      const m = createWorkerMetrics({ node: nodeId, arch });
      metrics.push(m);
      const daemon = createWorkerDaemon({
        ...(o.imageSyncGraceMs !== undefined ? { imageSyncGraceMs: o.imageSyncGraceMs } : {}),
        metrics: m,
        nodeId,
        arch,
        slots: o.slots ?? 2,
        launcher: host.launcher,
        images: host.store,
        queue,
        nodes: createNodeRegistry(client, keys),
        catalog,
        keys,
        redis: client,
        duplicate: dup,
        logger,
        logLimitBytes: o.logLimitBytes ?? 4 * 1024 * 1024,
        logRetentionSeconds: 600,
        version: 'test',
        ...(o.reportImages ? { reportImages: true } : {}),
        ...(o.timeMultiplier === undefined ? {} : { timeMultiplier: o.timeMultiplier }),
        // Tests fetch sources from a git server on the loopback (test/support/fake-github.ts).
        source: createSourceFetcher({
          poolPath: host.config.ARCHWAY_POOL_PATH,
          allowLoopback: o.allowLoopbackSources ?? true,
          redis: client,
          keys,
          logger,
        }),
      });
      await daemon.start();
      workers.push(daemon);
      return daemon;
    },
    async catalogOnly(name, arch) {
      const digest = `sha256:${randomBytes(32).toString('hex')}`;
      const now = new Date(Date.now() - 3600_000).toISOString();
      await catalog.publish({
        name,
        arch,
        digest,
        parent: null,
        sizeBytes: 1,
        description: 'in the catalog, on no node of the test',
        createdAt: now,
        publishedAt: now,
        full: { digest, sizeBytes: 1 },
        incremental: null,
      });
    },
    async submit(spec) {
      return (await queue.submit(JobSpec.parse(spec), { clientId: 'test' })).job.id;
    },
    async waitFinal(id, ms = 60_000) {
      let job: JobRecord | undefined;
      await eventually(
        async () => {
          job = await queue.get(id);
          return job !== undefined && FINAL_STATES.includes(job.state);
        },
        `job ${id} to finish`,
        ms,
      );
      return job as JobRecord;
    },
    async log(id) {
      return (await readLog(client, keys, id)).chunks.map((c) => c.text).join('');
    },
    async startApi(token, env = {}) {
      const api = await runApi(
        {
          REDIS_URL: redis.url,
          ARCHWAY_REDIS_PREFIX: keys.prefix,
          ARCHWAY_TOKEN: token,
          ARCHWAY_PORT: '0',
          ARCHWAY_LOG_LEVEL: process.env.ARCHWAY_TEST_LOG_LEVEL ?? 'warn',
          ...env,
        },
        { handleSignals: false },
      );
      apis.push(api);
      return api;
    },
    async close() {
      await Promise.all(apis.splice(0).map((a) => a.close()));
      await Promise.all(workers.splice(0).map((w) => w.stop()));
      await queue.close();
      client.disconnect();
      await redis.stop();
    },
  };
}
