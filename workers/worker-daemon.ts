import { hostname } from 'node:os';
import { type Job, UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { ImageStore } from '../images/index.ts';
import {
  createLogWriter,
  type JobQueue,
  LOCK_DURATION_MS,
  MAX_ATTEMPTS,
  type NodeRegistry,
  STALLED_INTERVAL_MS,
} from '../queue/index.ts';
import {
  type Arch,
  ArchwayError,
  type EndReason,
  type JobRecord,
  type JobState,
  type Keys,
  type Logger,
  toError,
} from '../src/index.ts';
import type { JobLauncher } from './job-launcher.ts';
import { jobEnv, scriptArgv } from './job-script.ts';

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
}

export interface WorkerDaemon {
  start(): Promise<void>;
  /** Takes no new job, lets the running ones finish, deregisters. Idempotent. */
  drain(): Promise<void>;
  /** Ends the running jobs (they are re-queued for another node), then drains. */
  stop(): Promise<void>;
  /** Jobs running now. */
  readonly busy: number;
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
  let state: 'active' | 'draining' = 'active';
  let heartbeat: NodeJS.Timeout | undefined;
  let cancelPoll: NodeJS.Timeout | undefined;
  let drained: Promise<void> | undefined;
  const log = o.logger.child({ node: o.nodeId, arch: o.arch });

  const worker = new Worker(o.keys.queueName(o.arch), (job, _token, signal) => process(job, signal), {
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

  async function process(bull: Job, bullSignal?: AbortSignal): Promise<string> {
    const parsed = QueuedJob.safeParse(bull.data);
    if (!parsed.success) throw new UnrecoverableError(`queue entry ${bull.id} is not an archway job`);
    const id = parsed.data.id;
    const record = await o.queue.get(id);
    if (!record) throw new UnrecoverableError(`job ${id} has no record`);
    if (record.state !== 'queued' && record.state !== 'running') return record.state; // canceled while queued
    const startedAt = new Date().toISOString();
    const took = await o.queue.store.transition(id, 'running', {
      newAttempt: true,
      onlyFrom: ['queued', 'running'],
      fields: { node: o.nodeId, startedAt, reason: null },
    });
    if (!took.ok) return took.state ?? 'gone';
    const attempt = took.attempt;
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
    return run(record, attempt, startedAt, bull, bullSignal);
  }

  async function run(
    record: JobRecord,
    attempt: number,
    startedAt: string,
    bull: Job,
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
      if (record.cancelRequested) stop('canceled');
      const t0 = Date.now();
      const job = await o.launcher.launch(
        {
          jobId: id,
          image: spec.image,
          argv: scriptArgv(spec.script),
          env: jobEnv(spec, { jobId: id, attempt, node: o.nodeId }),
          cwd: '/root',
          limits: spec.resources,
          timeoutSeconds: spec.timeoutSeconds,
        },
        { signal: ctl.signal },
      );
      armSilence();
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
          `[archway] ${job.warm ? 'warm' : 'cold'} container, launched in ${Date.now() - t0} ms\n`,
      );
      for await (const chunk of job.output) {
        armSilence();
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
      await finish(id, attempt, state, {
        exitCode: outcome.exitCode,
        reason: reason ?? null,
        finishedAt,
        logBytes: writer.bytes,
      });
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
      return state;
    } catch (e) {
      clearTimeout(silence);
      const err = toError(e);
      if (stopReason === 'canceled' && !(err instanceof ShutdownError)) {
        // Canceled before the job's process started (while its container was being made).
        await writer.note('[archway] canceled before it started\n');
        await finish(id, attempt, 'canceled', {
          reason: 'canceled',
          finishedAt: new Date().toISOString(),
          logBytes: writer.bytes,
        });
        await writer.end(o.logRetentionSeconds);
        return 'canceled';
      }
      // The host's failure (or this node shutting down): the attempt errored; retry elsewhere.
      const last = bull.attemptsMade + 1 >= MAX_ATTEMPTS;
      const why = err instanceof ShutdownError ? 'the node was stopped' : err.message;
      log.warn(
        { job: id, attempt, err: why },
        last ? 'job errored: no attempts left' : 'attempt errored: the job will be retried',
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
      throw err instanceof ArchwayError && !err.infra ? new UnrecoverableError(why) : err;
    } finally {
      running.delete(id);
    }
  }

  async function pollCancels(): Promise<void> {
    if (running.size === 0) return;
    const ids = [...running.keys()];
    const flags = await Promise.all(ids.map((id) => o.redis.hget(o.keys.job(id), 'cancelRequested')));
    ids.forEach((id, i) => {
      if (flags[i] === '1') running.get(id)?.stop('canceled');
    });
  }

  const beat = () =>
    o.nodes
      .heartbeat(o.nodeId, { busy: running.size, state })
      .catch((err: unknown) => log.warn({ err: toError(err).message }, 'heartbeat failed'));

  return {
    get busy() {
      return running.size;
    },
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
      subscriber.on('message', (_channel, id: string) => running.get(id)?.stop('canceled'));
      await subscriber.subscribe(o.keys.cancelChannel);
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
      })();
      return drained;
    },
    async stop() {
      for (const r of running.values()) r.stop('shutdown');
      await this.drain();
    },
  };
}

class ShutdownError extends Error {}

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
