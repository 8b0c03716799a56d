import { Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { ARCHES, type Keys, type Logger } from '../src/core/index.ts';
import type { JobQueue } from './job-queue.ts';
import { withAttempt } from './job-store.ts';
import { appendLogNote } from './log-writer.ts';

/** Lock and stall settings every party uses, so a lost node's job is back in the queue well within a minute. */
export const LOCK_DURATION_MS = 20_000;
export const STALLED_INTERVAL_MS = 10_000;

export interface StallWatchOptions {
  queue: JobQueue;
  keys: Keys;
  /** A normal connection, for the job records. */
  redis: Redis;
  /** Makes a connection for each arch's watcher. */
  duplicate: () => Redis;
  maxStalledCount: number;
  logRetentionSeconds: number;
  logger: Logger;
}

export interface StallWatch {
  start(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Runs BullMQ's stall check for every arch queue from the control plane, without taking jobs: the
 * job of a lost s390x node goes back to the queue even when no s390x node is left (it then waits,
 * visibly, as `queued`). A job that stalled too often fails in BullMQ; its record becomes
 * `errored` (reason infra) here, so no job is left `running` for ever.
 */
export function createStallWatch(o: StallWatchOptions): StallWatch {
  // BullMQ does not close a connection it was handed: close() quits these itself.
  const connections = ARCHES.map(() => o.duplicate());
  const workers = ARCHES.map(
    (arch, i) =>
      new Worker(o.keys.queueName(arch), null, {
        connection: connections[i] as Redis,
        prefix: o.keys.bullPrefix,
        autorun: false,
        lockDuration: LOCK_DURATION_MS,
        stalledInterval: STALLED_INTERVAL_MS,
        maxStalledCount: o.maxStalledCount,
      }),
  );
  for (const w of workers) {
    w.on('error', () => undefined);
    w.on('stalled', (jobId) => {
      void markRequeued(jobId).catch((e: unknown) =>
        o.logger.error({ err: e, job: jobId }, 'could not record a lost node'),
      );
    });
    w.on('failed', (job, err) => {
      const id = (job?.data as { id?: string } | undefined)?.id;
      if (!id) return;
      void markStalledOut(id, err.message).catch((e: unknown) =>
        o.logger.error({ err: e, job: id }, 'could not record a stalled job'),
      );
    });
  }

  async function markStalledOut(id: string, why: string): Promise<void> {
    const r = await o.queue.store.transition(id, 'errored', {
      onlyFrom: ['running', 'queued'],
      fields: { reason: 'infra', finishedAt: new Date().toISOString() },
    });
    if (!r.ok) return;
    o.logger.warn({ job: id, why }, 'job errored: its nodes were lost too many times');
    await appendLogNote(
      o.redis,
      o.keys,
      id,
      `\n[archway] errored: the nodes running this job were lost too many times (${why})\n`,
      o.logRetentionSeconds,
    );
  }

  /** The job's node was lost and BullMQ put it back: the record says so (queued, the attempt errored) while it waits. */
  async function markRequeued(id: string): Promise<void> {
    const job = await o.queue.get(id);
    if (job?.state !== 'running') return;
    // The errored attempt goes in with the state, in one write: a reader never sees the job queued
    // again without it (the system fault test read it in between).
    const lost = withAttempt(job.attempts, {
      n: job.attempt,
      node: job.node ?? 'unknown',
      startedAt: job.startedAt ?? new Date().toISOString(),
      endedAt: new Date().toISOString(),
      outcome: 'errored',
      reason: 'infra',
      error: 'node lost (its lock expired)',
    });
    const r = await o.queue.store.transition(id, 'queued', {
      attempt: job.attempt,
      onlyFrom: ['running'],
      fields: { attempts: JSON.stringify(lost) },
    });
    if (!r.ok) return;
    o.logger.warn({ job: id, node: job.node }, 'node lost mid-job: the job is queued again');
    await appendLogNote(
      o.redis,
      o.keys,
      id,
      `\n[archway] node ${job.node ?? 'unknown'} was lost during attempt ${job.attempt}; the job is queued again\n`,
    );
  }

  return {
    async start() {
      await Promise.all(workers.map((w) => w.startStalledCheckTimer()));
    },
    async close() {
      await Promise.all(workers.map((w) => w.close()));
      await Promise.all(connections.map((c) => c.quit().catch(() => c.disconnect())));
    },
  };
}
