import { hostname } from 'node:os';
import { DelayedError, type Job, UnrecoverableError, WaitingError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { ImageStore } from '../images/index.ts';
import {
  createLogWriter,
  type JobQueue,
  LOCK_DURATION_MS,
  MAX_ATTEMPTS,
  type NodeRegistry,
  type NodeState,
  STALLED_INTERVAL_MS,
} from '../queue/index.ts';
import {
  AbortedError,
  type Arch,
  ArchwayError,
  type EndReason,
  ImageNotFoundError,
  type JobRecord,
  type JobState,
  type Keys,
  type Logger,
  toError,
  type WorkerMetrics,
} from '../src/core/index.ts';
import type { JobLauncher } from './job-launcher.ts';
import { jobEnv, SCRIPT_ARGV, writeScript } from './job-script.ts';
import { handOffMs, retryDelayMs } from './retry-policy.ts';
import type { SourceFetcher } from './source-fetch.ts';

export interface WorkerDaemonOptions {
  nodeId: string;
  arch: Arch;
  /** Jobs run at once. */
  slots: number;
  launcher: JobLauncher;
  images: ImageStore;
  queue: JobQueue;
  nodes: NodeRegistry;
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
  /** Settles once the node has drained and left (by a signal, or an operator's drain request). */
  readonly stopped: Promise<void>;
}

const QueuedJob = z.object({ id: z.string().min(1) });
const HEARTBEAT_MS = 2000;
const CANCEL_POLL_MS = 1000;

interface Running {
  attempt: number;
  stop(reason: EndReason | 'shutdown'): void;
}

/** One node: a BullMQ worker of one arch queue that runs its jobs on this host's runtime. */
export function createWorkerDaemon(o: WorkerDaemonOptions): WorkerDaemon {
  const running = new Map<string, Running>();
  const connection = o.duplicate();
  const subscriber = o.duplicate();
  let state: NodeState = 'active';
  let quarantineReason: string | undefined;
  /** Whether each recent job errored for a host reason (the job's id when it did), newest last. */
  const recent: (string | false)[] = [];
  const quarantineAfter = o.quarantineAfter ?? 3;
  let resolveStopped: () => void = () => {};
  const stopped = new Promise<void>((r) => {
    resolveStopped = r;
  });
  let heartbeat: NodeJS.Timeout | undefined;
  let cancelPoll: NodeJS.Timeout | undefined;
  let drained: Promise<void> | undefined;
  const log = o.logger.child({ node: o.nodeId, arch: o.arch });

  const worker = new Worker(o.keys.queueName(o.arch), (job, token, signal) => process(job, token, signal), {
    connection,
    prefix: o.keys.bullPrefix,
    concurrency: o.slots,
    autorun: false,
    // A node killed mid-job loses its lock after 20 s; the stall check (every 10 s, on any node or
    // on the control plane) then puts the job back: re-run well within a minute.
    lockDuration: LOCK_DURATION_MS,
    stalledInterval: STALLED_INTERVAL_MS,
    maxStalledCount: MAX_ATTEMPTS - 1,
  });
  // While Redis is away every connection reports each retry: say it once per outage, at warn.
  let redisDown = false;
  worker.on('error', (err) => {
    if (!redisDown)
      log.warn({ err: err.message }, 'lost Redis; the node reconnects by itself and its running jobs go on');
    redisDown = true;
  });
  o.redis.on('ready', () => {
    if (redisDown) log.info('Redis is back');
    redisDown = false;
  });

  async function finish(
    id: string,
    attempt: number,
    to: JobState,
    fields: Record<string, string | number | null>,
  ) {
    const r = await o.queue.store.transition(id, to, { attempt, onlyFrom: ['running'], fields });
    if (!r.ok)
      log.warn(
        { job: id, attempt, to, why: r.why, state: r.state },
        'job changed hands; this attempt does not finish it',
      );
    return r.ok;
  }

  async function process(bull: Job, token: string | undefined, bullSignal?: AbortSignal): Promise<string> {
    const parsed = QueuedJob.safeParse(bull.data);
    if (!parsed.success) throw new UnrecoverableError(`queue entry ${bull.id} is not an archway job`);
    const id = parsed.data.id;
    const record = await o.queue.get(id);
    if (!record) throw new UnrecoverableError(`job ${id} has no record`);
    if (record.state !== 'queued' && record.state !== 'running') return record.state; // canceled while queued
    if (token && (await declines())) {
      // Told to drain (or quarantined) after this fetch began: BullMQ hands a job to a fetch that
      // was blocking when the worker paused, and the drain request may not have reached this
      // process yet. The durable flag says so; the job goes back for another node, no attempt counted.
      await bull.moveToWait(token);
      throw new WaitingError();
    }
    const last = record.attempts.at(-1);
    const wait =
      record.state === 'queued' && last?.outcome === 'errored' && last.node === o.nodeId && token
        ? handOffMs({
            erroredHere: true,
            endedAtMs: Date.parse(last.endedAt ?? ''),
            nowMs: Date.now(),
            otherLiveNodes: await otherLiveNodes(),
          })
        : 0;
    if (wait > 0 && token) {
      // Its last attempt errored here and another node is live: leave the retry to it, for a bounded
      // time (then this node runs it, so it cannot bounce for ever).
      await bull.moveToDelayed(Date.now() + wait, token);
      throw new DelayedError();
    }
    const startedAt = new Date().toISOString();
    const took = await o.queue.store.transition(id, 'running', {
      newAttempt: true,
      onlyFrom: ['queued', 'running'],
      fields: { node: o.nodeId, startedAt, reason: null },
    });
    if (!took.ok) return took.state ?? 'gone';
    const attempt = took.attempt;
    // Queue wait of the first attempt: from submission (BullMQ's timestamp) to now.
    if (attempt === 1)
      o.metrics?.queueWait.observe({ arch: o.arch }, Math.max(0, Date.now() - bull.timestamp) / 1000);
    if (took.from === 'running') {
      // The previous attempt's node went silent and lost the job's lock: that attempt errored.
      await o.queue.store.recordAttempt(id, {
        n: attempt - 1,
        node: record.node ?? 'unknown',
        startedAt: record.startedAt ?? startedAt,
        endedAt: startedAt,
        outcome: 'errored',
        reason: 'infra',
        error: 'node lost (its lock expired)',
      });
    }
    await o.queue.store.recordAttempt(id, { n: attempt, node: o.nodeId, startedAt });
    return run(record, attempt, startedAt, bull, token, bullSignal);
  }

  /** Whether this node must not start the job it has just taken: it drains, is asked to, or is quarantined. */
  async function declines(): Promise<boolean> {
    if (state !== 'active') return true;
    if (!(await o.nodes.isDrainRequested(o.nodeId))) return false;
    await applyControl(true, false);
    return true;
  }

  /** Live nodes of this arch, other than this one, that take jobs. */
  async function otherLiveNodes(): Promise<number> {
    try {
      return (await o.nodes.live(o.arch)).filter((n) => n.id !== o.nodeId && !n.drainRequested).length;
    } catch {
      return 0; // Unknown: back off and retry here rather than wait on a node that may not exist.
    }
  }

  async function run(
    record: JobRecord,
    attempt: number,
    startedAt: string,
    bull: Job,
    token: string | undefined,
    bullSignal?: AbortSignal,
  ): Promise<string> {
    const id = record.id;
    const spec = record.spec;
    const ctl = new AbortController();
    let stopReason: EndReason | 'shutdown' | undefined;
    const stop = (reason: EndReason | 'shutdown') => {
      stopReason ??= reason;
      ctl.abort(new Error(reason));
    };
    running.set(id, { attempt, stop });
    o.metrics?.running.set({ arch: o.arch }, running.size);
    bullSignal?.addEventListener('abort', () => stop('shutdown'), { once: true });
    const writer = createLogWriter({
      redis: o.redis,
      keys: o.keys,
      jobId: id,
      limitBytes: o.logLimitBytes,
      secrets: Object.values(spec.secrets),
      onLimit: () => stop('log_limit'),
    });
    let silence: NodeJS.Timeout | undefined;
    const armSilence = () => {
      clearTimeout(silence);
      silence = setTimeout(() => stop('silence'), spec.silenceTimeoutSeconds * 1000);
    };
    const rt = o.launcher.runtime;
    try {
      if (record.cancelRequested)
        stop(
          (await o.redis.hget(o.keys.job(id), 'cancelReason')) === 'superseded' ? 'superseded' : 'canceled',
        );
      const source = spec.source;
      const fetcher = o.source;
      if (source && !fetcher)
        throw new ArchwayError('SOURCE_UNSUPPORTED', `node ${o.nodeId} does not fetch sources`, {
          infra: true,
        });
      let sourceNote = '';
      const t0 = Date.now();
      const job = await o.launcher.launch(
        {
          jobId: id,
          image: spec.image,
          argv: SCRIPT_ARGV,
          env: jobEnv(spec, { jobId: id, attempt, node: o.nodeId }),
          cwd: source && fetcher ? fetcher.buildDirOf(source) : '/root',
          prepare: async (rootfs: string, signal: AbortSignal, idBase: number) => {
            await writeScript(rootfs, spec.script);
            if (!source || !fetcher) return;
            const p = await fetcher.place({ jobId: id, source, rootfs, idBase, signal });
            sourceNote = `[archway] source ${source.git} at ${p.sha}: ${p.mirrorHit ? "in this host's mirror" : `fetched in ${p.fetchMs} ms`}, placed at ${p.buildDir} in ${p.placeMs} ms\n`;
          },
          limits: spec.resources,
          network: spec.network,
          timeoutSeconds: spec.timeoutSeconds,
        },
        { signal: ctl.signal },
      );
      armSilence();
      o.metrics?.launch.observe(
        { arch: o.arch, start: job.warm ? 'warm' : 'cold' },
        (Date.now() - t0) / 1000,
      );
      await o.queue.store
        .transition(id, 'running', {
          attempt,
          onlyFrom: ['running'],
          fields: { imageDigest: job.image.digest },
        })
        .catch(() => undefined);
      await writer.note(
        `${attempt > 1 ? `\n[archway] --- attempt ${attempt} ---\n` : ''}` +
          `[archway] job ${id} on node ${o.nodeId}: ${o.arch}, ${rt.emulated ? `emulated (qemu-user on ${hostname()})` : 'native'}\n` +
          `[archway] image ${job.image.name}@${job.image.digest}\n` +
          `[archway] ${job.warm ? 'warm' : 'cold'} container, launched in ${Date.now() - t0} ms\n` +
          `[archway] network: ${spec.network === 'egress' ? "egress (outbound only; apt uses this host's package cache)" : 'none (only loopback: no DNS, no downloads; ask for network: egress)'}\n` +
          sourceNote,
      );
      for await (const chunk of job.output) {
        armSilence();
        o.metrics?.logBytes.inc({ arch: o.arch }, (chunk as Buffer).length);
        await writer.write(chunk as Buffer);
      }
      const outcome = await job.result;
      clearTimeout(silence);
      if (stopReason === 'shutdown') throw new ShutdownError();
      const reason: EndReason | undefined = stopReason ?? outcome.reason;
      const state: JobState =
        reason === 'canceled' || reason === 'superseded'
          ? 'canceled'
          : reason === undefined && outcome.exitCode === 0
            ? 'passed'
            : 'failed';
      await writer.note(endLine(reason, outcome.exitCode, spec));
      const finishedAt = new Date().toISOString();
      const owned = await finish(id, attempt, state, {
        exitCode: outcome.exitCode,
        reason: reason ?? null,
        finishedAt,
        logBytes: writer.bytes,
      });
      if (!owned) {
        // Cut off from Redis while it ran (a partition): the node was lost, the job re-queued and
        // run again elsewhere. This run's end does not count; the record says so instead of
        // listing a second passed attempt.
        await o.queue.store.recordAttempt(id, {
          n: attempt,
          node: o.nodeId,
          startedAt,
          endedAt: finishedAt,
          outcome: 'errored',
          reason: 'infra',
          exitCode: outcome.exitCode,
          error: `node ${o.nodeId} lost the job while it ran (its heartbeats did not reach Redis): it was re-queued, and this run's ${state} was discarded`,
        });
        o.metrics?.outcomes.inc({ arch: o.arch, state: 'errored', reason: 'infra' });
        return state;
      }
      await o.queue.store.recordAttempt(id, {
        n: attempt,
        node: o.nodeId,
        startedAt,
        endedAt: finishedAt,
        outcome: state,
        exitCode: outcome.exitCode,
        ...(reason ? { reason } : {}),
      });
      await writer.end(o.logRetentionSeconds);
      o.metrics?.outcomes.inc({ arch: o.arch, state, reason: reason ?? '' });
      noteOutcome(false);
      return state;
    } catch (e) {
      clearTimeout(silence);
      const err = toError(e);
      if ((stopReason === 'canceled' || stopReason === 'superseded') && !(err instanceof ShutdownError)) {
        // Canceled before the job's process started (while its container was being made).
        await writer.note('[archway] canceled before it started\n');
        await finish(id, attempt, 'canceled', {
          reason: stopReason,
          finishedAt: new Date().toISOString(),
          logBytes: writer.bytes,
        });
        await writer.end(o.logRetentionSeconds);
        return 'canceled';
      }
      if (isOwnMistake(err) && stopReason === undefined) {
        // The job's own mistake (limits over this node's ceilings, a commit its repository lacks):
        // it fails, is not retried, and does not count against the node.
        await writer.note(`\n[archway] the job cannot run: ${err.message}\n`);
        const endedAt = new Date().toISOString();
        await finish(id, attempt, 'failed', { finishedAt: endedAt, logBytes: writer.bytes });
        await o.queue.store.recordAttempt(id, {
          n: attempt,
          node: o.nodeId,
          startedAt,
          endedAt,
          outcome: 'failed',
          error: err.message,
        });
        await writer.end(o.logRetentionSeconds);
        o.metrics?.outcomes.inc({ arch: o.arch, state: 'failed', reason: '' });
        noteOutcome(false);
        throw new UnrecoverableError(err.message);
      }
      // The host's failure (or this node shutting down): the attempt errored; retry elsewhere.
      // Retried elsewhere: the host's failures, and an image this host lacks (another may hold it).
      const retryable = !(err instanceof ArchwayError) || err.infra || err instanceof ImageNotFoundError;
      // The record counts attempts (BullMQ does not count the delays this node makes for a retry).
      const last = !retryable || attempt >= MAX_ATTEMPTS || bull.attemptsMade + 1 >= MAX_ATTEMPTS;
      const why = err instanceof ShutdownError ? 'the node was stopped' : err.message;
      if (!(err instanceof ShutdownError)) {
        noteOutcome(id, why);
        // Every errored attempt, retried or not: the rate operators alert on (ops/prometheus).
        o.metrics?.outcomes.inc({ arch: o.arch, state: 'errored', reason: 'infra' });
      }
      log.warn(
        { job: id, attempt, err: why },
        last ? 'job errored: no retry' : 'attempt errored: the job will be retried',
      );
      await writer.note(
        `\n[archway] attempt ${attempt} errored on node ${o.nodeId}: ${why}\n${last ? '' : '[archway] the job goes back to the queue\n'}`,
      );
      const endedAt = new Date().toISOString();
      await o.queue.store.recordAttempt(id, {
        n: attempt,
        node: o.nodeId,
        startedAt,
        endedAt,
        outcome: 'errored',
        reason: 'infra',
        error: why,
      });
      if (last) {
        await finish(id, attempt, 'errored', {
          reason: 'infra',
          finishedAt: endedAt,
          logBytes: writer.bytes,
        });
        await writer.end(o.logRetentionSeconds);
        throw new UnrecoverableError(why);
      }
      await finish(id, attempt, 'queued', {});
      if (!token) throw err; // BullMQ's own retry (its fixed back-off), without a lock token to move the job.
      // To another live node at once; with none, back to this one after a back-off that grows.
      const delay = retryDelayMs(attempt, await otherLiveNodes());
      if (delay > 0)
        await writer.note(
          `[archway] no other node of ${o.arch} is live: the retry waits ${Math.round(delay / 1000)} s\n`,
        );
      await bull.moveToDelayed(Date.now() + delay, token);
      throw new DelayedError();
    } finally {
      running.delete(id);
      o.metrics?.running.set({ arch: o.arch }, running.size);
      if (state === 'draining' && running.size === 0) void beat();
    }
  }

  /** Counts an outcome toward quarantine: `false` for one that was not the host's fault, else the job's id. */
  function noteOutcome(hostError: string | false, why?: string): void {
    // The retries of one job on this node (on a pool of one node) count once: three attempts of the
    // same job say as much about the job as about the host, and must not quarantine the only node.
    if (hostError !== false && recent.includes(hostError)) return;
    recent.push(hostError);
    if (recent.length > quarantineAfter) recent.shift();
    if (state === 'active' && recent.length === quarantineAfter && recent.every(Boolean)) {
      state = 'quarantined';
      quarantineReason = `the last ${quarantineAfter} attempts errored on this host (last: ${why ?? 'unknown'})`;
      log.error(
        { reason: quarantineReason },
        'node quarantined: it takes no more jobs until an operator undrains it',
      );
      void worker.pause(true);
      void beat();
    }
  }

  /** Applies an operator's drain or undrain request (from the heartbeat's reply or the control channel). */
  async function applyControl(drainRequested: boolean, fromMessage: boolean): Promise<void> {
    if (drained) return;
    if (drainRequested && state !== 'draining') {
      state = 'draining';
      log.info(
        { running: running.size },
        'drain requested: no new jobs; leaving once the running ones finish',
      );
      void worker.pause(true);
    } else if (!drainRequested && fromMessage && (state === 'draining' || state === 'quarantined')) {
      state = 'active';
      quarantineReason = undefined;
      recent.length = 0;
      worker.resume();
      log.info('undrained: taking jobs again');
    }
    if (state === 'draining' && drainRequested && running.size === 0) void daemon.drain();
  }

  /** Stops a running job whose cancel flag is set, with the reason stored beside it (`superseded` or `canceled`). */
  async function applyCancel(id: string): Promise<void> {
    if (!running.has(id)) return;
    const [flag, why] = await o.redis.hmget(o.keys.job(id), 'cancelRequested', 'cancelReason');
    if (flag === '1') running.get(id)?.stop(why === 'superseded' ? 'superseded' : 'canceled');
  }

  async function pollCancels(): Promise<void> {
    await Promise.all([...running.keys()].map((id) => applyCancel(id)));
  }

  const beat = async () => {
    try {
      const r = await o.nodes.heartbeat(o.nodeId, {
        busy: running.size,
        state,
        ...(quarantineReason ? { quarantineReason } : {}),
      });
      await applyControl(r.drainRequested, false);
    } catch (err) {
      log.warn({ err: toError(err).message }, 'heartbeat failed');
    }
  };

  const daemon: WorkerDaemon = {
    get busy() {
      return running.size;
    },
    get state() {
      return state;
    },
    stopped,
    async start() {
      await o.nodes.register({
        id: o.nodeId,
        arch: o.arch,
        hostArch: globalThis.process.arch,
        emulated: o.launcher.runtime.emulated,
        slots: o.slots,
        busy: 0,
        state,
        version: o.version,
        startedAt: new Date().toISOString(),
      });
      // Pub/sub can lose a message (a reconnect); the durable flag, polled every second, cannot.
      subscriber.on('message', (channel, id: string) => {
        if (channel === o.keys.cancelChannel) void applyCancel(id).catch(() => undefined);
        else if (id === o.nodeId) {
          void o.nodes
            .get(o.nodeId)
            .then((n) => applyControl(n?.drainRequested ?? false, true))
            .catch((err: unknown) =>
              log.warn({ err: toError(err).message }, 'could not apply a drain request'),
            );
        }
      });
      // Subscribing before the connection's ready check ends makes ioredis drop the subscription: wait for it.
      await subscriber.ping();
      await subscriber.subscribe(o.keys.cancelChannel, o.keys.nodeControlChannel);
      heartbeat = setInterval(beat, HEARTBEAT_MS);
      cancelPoll = setInterval(() => void pollCancels().catch(() => undefined), CANCEL_POLL_MS);
      void worker.run();
      await worker.waitUntilReady();
      log.info({ slots: o.slots, emulated: o.launcher.runtime.emulated }, 'node ready');
    },
    drain() {
      drained ??= (async () => {
        // Order: stop taking jobs and let the running ones finish; then the warm pool; then leave.
        state = 'draining';
        await beat();
        await worker.close();
        clearInterval(heartbeat);
        clearInterval(cancelPoll);
        await o.launcher.close();
        await o.nodes.deregister(o.nodeId).catch(() => undefined);
        await subscriber.quit().catch(() => undefined);
        await connection.quit().catch(() => undefined);
        log.info('node drained and deregistered');
        resolveStopped();
      })();
      return drained;
    },
    async stop() {
      for (const r of running.values()) r.stop('shutdown');
      await daemon.drain();
    },
  };
  return daemon;
}

class ShutdownError extends Error {}

/** A failure that is the job's, not the host's: another node would fail it the same way. */
function isOwnMistake(err: Error): err is ArchwayError {
  return (
    err instanceof ArchwayError &&
    !err.infra &&
    !(err instanceof ImageNotFoundError) &&
    !(err instanceof AbortedError)
  );
}

function endLine(
  reason: EndReason | undefined,
  exitCode: number,
  spec: {
    timeoutSeconds: number;
    silenceTimeoutSeconds: number;
    resources: { memoryMiB?: number | undefined };
  },
): string {
  switch (reason) {
    case undefined:
      return `\n[archway] exited with ${exitCode}\n`;
    case 'timeout':
      return `\n[archway] stopped: the job ran longer than its time limit of ${spec.timeoutSeconds} s\n`;
    case 'silence':
      return `\n[archway] stopped: no output for ${spec.silenceTimeoutSeconds} s\n`;
    case 'log_limit':
      return '\n[archway] stopped: the log reached its size limit\n';
    case 'oom':
      return `\n[archway] killed: out of memory (limit ${spec.resources.memoryMiB ?? 'default'} MiB)\n`;
    case 'canceled':
      return '\n[archway] canceled\n';
    case 'superseded':
      return '\n[archway] canceled: superseded by a newer build\n';
    case 'infra':
      return '\n[archway] stopped: host error\n';
    default: {
      const never: never = reason;
      return `\n[archway] ended: ${String(never)}\n`;
    }
  }
}
