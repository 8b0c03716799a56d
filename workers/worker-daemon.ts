import { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import type { ImageStore } from '../images/index.ts';
import {
  createJobConsumer,
  findImage,
  type ImageCatalog,
  type JobQueue,
  type NodeRegistry,
  type NodeState,
} from '../queue/index.ts';
import type { Arch, Keys, Logger, WorkerMetrics } from '../src/core/index.ts';
import type { JobLauncher } from './job-launcher.ts';
import { createNodeMembership } from './node-membership.ts';
import { handOffMs } from './retry-policy.ts';
import { createJobRunner, IMAGE_SYNC_GRACE_MS, type MissingImage } from './run-job.ts';
import type { SourceFetcher } from './source-fetch.ts';
import { recordWorkerMetrics, type WorkerEvents } from './worker-events.ts';

export interface WorkerDaemonOptions {
  nodeId: string;
  arch: Arch;
  /** Jobs run at once. */
  slots: number;
  /** How long a missing image's current version may still be on its way to this node (ARCHWAY_IMAGE_SYNC_GRACE_SECONDS). Default IMAGE_SYNC_GRACE_MS. */
  imageSyncGraceMs?: number;
  launcher: JobLauncher;
  images: ImageStore;
  queue: JobQueue;
  nodes: NodeRegistry;
  /**
   * The image catalog: an image this node lacks that the catalog published over
   * IMAGE_SYNC_GRACE_MS ago is the host's failure (its sync failed; retried elsewhere); one that
   * neither the catalog nor another live node holds is the job's (`bad_spec`). Without one, only
   * the other live nodes' images count.
   */
  catalog?: ImageCatalog;
  keys: Keys;
  /** For commands; retries for ever, so a Redis restart delays the job instead of failing it. */
  redis: Redis;
  /** Makes the connections BullMQ blocks on and the cancel subscription uses. */
  duplicate: () => Redis;
  logger: Logger;
  /** Bytes of output kept per job. */
  logLimitBytes: number;
  logRetentionSeconds: number;
  version: string;
  /** Where the node's figures go (its /metrics). */
  metrics?: WorkerMetrics;
  /** A node whose last this-many attempts all errored for host reasons stops taking jobs (quarantined). Default 3. */
  quarantineAfter?: number;
  /** Fetches a job's `source` and places it in its container. Without one, a job with a source errors. */
  source?: SourceFetcher;
  /**
   * Report the images of `images` on the node's record with its heartbeat (when they change): for
   * a node without an image sync agent, which otherwise reports them. Default false.
   */
  reportImages?: boolean;
  /** This arch's time multiplier (ARCHWAY_TIME_MULTIPLIERS): jobs' time and silence limits are multiplied by it. Default 1. */
  timeMultiplier?: number;
}

export interface WorkerDaemon {
  start(): Promise<void>;
  /** Takes no new job, lets the running ones finish, deregisters. Idempotent. */
  drain(): Promise<void>;
  /** Ends the running jobs (they are re-queued for another node), then drains. */
  stop(): Promise<void>;
  /** Jobs running now. */
  readonly busy: number;
  readonly state: NodeState;
  /** What the node reports as it works (the metrics listen here). */
  readonly events: EventEmitter<WorkerEvents>;
  /** Settles once the node has drained and left (by a signal, or an operator's drain request). */
  readonly stopped: Promise<void>;
}

const CANCEL_POLL_MS = 1000;

/**
 * One node: the consumer of one arch's queue (queue/), the runner of its attempts (run-job.ts),
 * its membership of the pool (node-membership.ts), and the cancel requests of its jobs.
 */
export function createWorkerDaemon(o: WorkerDaemonOptions): WorkerDaemon {
  const events = new EventEmitter<WorkerEvents>();
  if (o.metrics) recordWorkerMetrics(events, o.metrics, o.arch);
  const subscriber = o.duplicate();
  const log = o.logger.child({ node: o.nodeId, arch: o.arch });
  let resolveStopped: () => void = () => {};
  const stopped = new Promise<void>((r) => {
    resolveStopped = r;
  });
  let cancelPoll: NodeJS.Timeout | undefined;
  let drained: Promise<void> | undefined;

  /** Live nodes of this arch, other than this one, that take jobs. */
  async function otherLiveNodes(): Promise<number> {
    try {
      return (await o.nodes.live(o.arch)).filter((n) => n.id !== o.nodeId && !n.drainRequested).length;
    } catch {
      return 0; // Unknown: back off and retry here rather than wait on a node that may not exist.
    }
  }

  /** Where an image is that this node lacks: the catalog's current version (overdue here once its grace passed), another live node, nowhere. */
  async function whereIsImage(image: string): Promise<MissingImage> {
    const at = await findImage({ catalog: o.catalog, nodes: o.nodes, exceptNode: o.nodeId }, image, o.arch);
    if (!at.found) return 'nowhere';
    const age = at.published ? Date.now() - Date.parse(at.published) : Number.NaN;
    return age > (o.imageSyncGraceMs ?? IMAGE_SYNC_GRACE_MS) ? 'overdue' : 'elsewhere';
  }

  const runner = createJobRunner({
    nodeId: o.nodeId,
    arch: o.arch,
    launcher: o.launcher,
    redis: o.redis,
    keys: o.keys,
    logLimitBytes: o.logLimitBytes,
    logRetentionSeconds: o.logRetentionSeconds,
    source: o.source,
    events,
    cancelState: (id) => o.queue.store.cancelState(id),
    whereIsImage,
    otherLiveNodes,
    ...(o.timeMultiplier === undefined ? {} : { timeMultiplier: o.timeMultiplier }),
  });

  // While Redis is away every connection reports each retry: say it once per outage, at warn.
  let redisDown = false;
  const consumer = createJobConsumer(
    {
      arch: o.arch,
      slots: o.slots,
      nodeId: o.nodeId,
      queue: o.queue,
      keys: o.keys,
      connection: o.duplicate(),
      logger: o.logger,
      onError: (err) => {
        if (!redisDown)
          log.warn(
            { err: err.message },
            'lost Redis; the node reconnects by itself and its running jobs go on',
          );
        redisDown = true;
      },
      async admit(record) {
        // Told to drain (or quarantined) after this fetch began: the durable flag says so, even
        // when the drain request has not reached this process yet.
        if (await membership.declines()) return { run: false };
        const last = record.attempts.at(-1);
        if (record.state !== 'queued' || last?.outcome !== 'errored' || last.node !== o.nodeId)
          return { run: true };
        // Its last attempt errored here and another node is live: leave the retry to it, for a
        // bounded time (then this node runs it, so it cannot bounce for ever).
        const wait = handOffMs({
          erroredHere: true,
          endedAtMs: Date.parse(last.endedAt ?? ''),
          nowMs: Date.now(),
          otherLiveNodes: await otherLiveNodes(),
        });
        return wait > 0 ? { run: false, delayMs: wait } : { run: true };
      },
    },
    async (job, signal) => {
      const r = await runner.run(job, signal);
      membership.note(job.id, r.host, r.error);
      if (r.outcome.state === 'errored')
        log.warn(
          { job: job.id, attempt: job.attempt, err: r.error },
          r.outcome.retryDelayMs === undefined
            ? 'job errored: no retry'
            : 'attempt errored: the job will be retried',
        );
      return r.outcome;
    },
  );
  o.redis.on('ready', () => {
    if (redisDown) log.info('Redis is back');
    redisDown = false;
  });

  const membership = createNodeMembership({
    nodeId: o.nodeId,
    arch: o.arch,
    slots: o.slots,
    version: o.version,
    emulated: o.launcher.runtime.emulated,
    nodes: o.nodes,
    logger: o.logger,
    events,
    quarantineAfter: o.quarantineAfter,
    busy: () => runner.running.length,
    pause: () => void consumer.pause(),
    resume: () => consumer.resume(),
    leave: () => void daemon.drain(),
    heldImages: o.reportImages
      ? async () =>
          (await o.images.list())
            .filter((i) => i.arch === o.arch)
            .map((i) => ({ name: i.name, arch: i.arch, digest: i.digest, current: i.current }))
      : undefined,
  });
  events.on('slot:free', () => membership.slotFreed());

  /** Stops a running job whose cancel flag is set, with the reason stored beside it. */
  async function applyCancel(id: string): Promise<void> {
    if (!runner.running.includes(id)) return;
    const c = await o.queue.store.cancelState(id);
    if (c.requested) runner.stop(id, c.reason);
  }

  const daemon: WorkerDaemon = {
    get busy() {
      return runner.running.length;
    },
    get state() {
      return membership.state;
    },
    events,
    stopped,
    async start() {
      await membership.start();
      // Pub/sub can lose a message (a reconnect); the durable flag, polled every second, cannot.
      subscriber.on('message', (channel, id: string) => {
        if (channel === o.keys.cancelChannel) void applyCancel(id).catch(() => undefined);
        else if (id === o.nodeId) void membership.controlMessage();
      });
      // Subscribing before the connection's ready check ends makes ioredis drop the subscription: wait for it.
      await subscriber.ping();
      await subscriber.subscribe(o.keys.cancelChannel, o.keys.nodeControlChannel);
      cancelPoll = setInterval(
        () => void Promise.all(runner.running.map((id) => applyCancel(id))).catch(() => undefined),
        CANCEL_POLL_MS,
      );
      await consumer.start();
      log.info({ slots: o.slots, emulated: o.launcher.runtime.emulated }, 'node ready');
    },
    drain() {
      drained ??= (async () => {
        // Order: stop taking jobs and let the running ones finish; then the warm pool; then leave.
        await membership.drain();
        await consumer.close();
        clearInterval(cancelPoll);
        await o.launcher.close();
        await membership.close();
        await subscriber.quit().catch(() => undefined);
        log.info('node drained and deregistered');
        resolveStopped();
      })();
      return drained;
    },
    async stop() {
      for (const id of runner.running) runner.stop(id, 'shutdown');
      await daemon.drain();
    },
  };
  return daemon;
}
