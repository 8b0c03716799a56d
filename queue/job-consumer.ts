import { DelayedError, type Job, UnrecoverableError, WaitingError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import type {
  Arch,
  EffectiveLimits,
  EndReason,
  JobRecord,
  JobState,
  Keys,
  Logger,
} from '../src/core/index.ts';
import { HOLD_RECHECK_MS, SLOT_RENEW_MS } from './concurrency-limits.ts';
import { type JobQueue, MAX_ATTEMPTS } from './job-queue.ts';
import { LOCK_DURATION_MS, STALLED_INTERVAL_MS } from './stall-watch.ts';

/** One attempt of a job, as the consumer hands it to its handler: the record is already `running` on this node. */
export interface TakenJob {
  readonly id: string;
  /** The record as it was when the node took the job (its state then: `queued`, or `running` on a lost node). */
  readonly record: JobRecord;
  /** This attempt's number (1-based), on the record. */
  readonly attempt: number;
  readonly startedAt: string;
  /** No attempt follows this one should it error: the job has had MAX_ATTEMPTS. */
  readonly lastAttempt: boolean;
  /** When the job was queued (epoch ms): its wait is the time until its first attempt. */
  readonly enqueuedAtMs: number;
  /** Sets fields on the record while this attempt owns the job (the image digest it runs); false when it changed hands. */
  update(fields: { imageDigest?: string; effectiveLimits?: EffectiveLimits }): Promise<boolean>;
}

/**
 * How an attempt ended, as the handler says. The consumer writes it on the record (if this
 * attempt still owns the job) and tells BullMQ.
 */
export type AttemptOutcome =
  | {
      /** The job is over: its script exited, it was stopped for a reason, or it cannot run at all. */
      state: Extract<JobState, 'passed' | 'failed' | 'canceled'>;
      exitCode?: number;
      reason?: EndReason;
      /**
       * Set when the job could not run because of its own spec (the reason says what): the attempt
       * records it and BullMQ's entry fails without a retry.
       */
      error?: string;
      logBytes: number;
      /** Runs once the outcome is on the record: the worker ends the job's log there, so a follower that sees the end reads the final state. */
      onRecorded?: () => Promise<void>;
    }
  | {
      /** The host failed the attempt (or the node stopped): retried when `retryDelayMs` is set, else the job ends `errored`. */
      state: 'errored';
      error: string;
      /** When set, the job goes back to the queue and no node takes it for this long (0: at once). */
      retryDelayMs?: number;
      logBytes: number;
      onRecorded?: () => Promise<void>;
    };

/** Whether the node runs a job it has just taken: yes, no (it goes back for another node, no attempt counted), or later. */
export type Admission = { run: true } | { run: false; delayMs?: number };

export type JobHandler = (job: TakenJob, signal: AbortSignal) => Promise<AttemptOutcome>;

export interface JobConsumerOptions {
  arch: Arch;
  /** Jobs run at once. */
  slots: number;
  /** Written on the record of each attempt this consumer starts. */
  nodeId: string;
  queue: JobQueue;
  keys: Keys;
  /** The connection BullMQ blocks on: the consumer's own; close() quits it. */
  connection: Redis;
  logger: Logger;
  /**
   * Asked for each job taken, before its attempt starts (the node drains, the job's last attempt
   * errored here and another node should take it, ...). Default: run it.
   */
  admit?: (record: JobRecord) => Promise<Admission>;
  /** Told about connection errors (BullMQ reconnects by itself). */
  onError?: (err: Error) => void;
}

export interface JobConsumer {
  /** Starts taking jobs; resolves once the consumer's connection is ready. */
  start(): Promise<void>;
  /** Takes no new job (the running ones go on) until resume(). */
  pause(): Promise<void>;
  resume(): void;
  /** Takes no new job, waits for the running ones, and quits the connection. Idempotent. */
  close(): Promise<void>;
}

const QueuedJob = z.object({ id: z.string().min(1) });

/**
 * The consumer of one arch's queue: BullMQ's Worker and its attempt protocol (which attempt owns
 * the job, a lost node's attempt, hand-off, delays for retries), so that a node sees a job and
 * an AbortSignal and returns an outcome. The job record is the truth: BullMQ's own attempt count
 * misses the delays a node makes for a retry, so the record's count decides the last attempt.
 */
export function createJobConsumer(o: JobConsumerOptions, handler: JobHandler): JobConsumer {
  const store = o.queue.store;
  const log = o.logger.child({ node: o.nodeId, arch: o.arch });
  const worker = new Worker(o.keys.queueName(o.arch), (job, token, signal) => take(job, token, signal), {
    connection: o.connection,
    prefix: o.keys.bullPrefix,
    concurrency: o.slots,
    autorun: false,
    // A node killed mid-job loses its lock after 20 s; the stall check (every 10 s, on any node or
    // on the control plane) then puts the job back: re-run well within a minute.
    lockDuration: LOCK_DURATION_MS,
    stalledInterval: STALLED_INTERVAL_MS,
    maxStalledCount: MAX_ATTEMPTS - 1,
  });
  worker.on('error', (err) => o.onError?.(err));
  let closing: Promise<void> | undefined;

  async function finish(
    id: string,
    attempt: number,
    to: JobState,
    fields: Record<string, string | number | null>,
  ) {
    const r = await store.transition(id, to, { attempt, onlyFrom: ['running'], fields });
    if (!r.ok)
      log.warn(
        { job: id, attempt, to, why: r.why, state: r.state },
        'job changed hands; this attempt does not finish it',
      );
    return r.ok;
  }

  async function take(bull: Job, token: string | undefined, signal?: AbortSignal): Promise<string> {
    const parsed = QueuedJob.safeParse(bull.data);
    if (!parsed.success) throw new UnrecoverableError(`queue entry ${bull.id} is not an archway job`);
    const id = parsed.data.id;
    const record = await o.queue.get(id);
    if (!record) throw new UnrecoverableError(`job ${id} has no record`);
    if (record.state !== 'queued' && record.state !== 'running') {
      // Canceled while queued (or held): out of every line it waited in.
      await o.queue.limits.forget(record).catch(() => undefined);
      return record.state;
    }
    if (token && o.admit) {
      const a = await o.admit(record);
      if (!a.run && !a.delayMs) {
        // BullMQ hands a job to a fetch that was blocking when the worker paused: back for another node, no attempt counted.
        await bull.moveToWait(token);
        throw new WaitingError();
      }
      if (!a.run) {
        await bull.moveToDelayed(Date.now() + (a.delayMs ?? 0), token);
        throw new DelayedError();
      }
    }
    // A job over its repository's (or a label's) cap waits in the delayed set, holding no slot of
    // this node and no attempt, until a job of its group ends and promotes it.
    const slot = await o.queue.limits.acquire(record);
    if (!slot.granted) {
      if (!token) throw new Error(slot.message);
      if (record.state === 'running') await requeueLost(id, record);
      await o.queue.limits.noteHeld(id, slot.message);
      await bull.moveToDelayed(Date.now() + HOLD_RECHECK_MS, token);
      log.debug({ job: id, why: slot.message }, 'held by a concurrency cap');
      // A slot may have freed between the check and the move: look once more, now that it waits.
      void wake([slot.group]);
      throw new DelayedError();
    }
    const groups = slot.groups;
    const startedAt = new Date().toISOString();
    const took = await store.transition(id, 'running', {
      newAttempt: true,
      onlyFrom: ['queued', 'running'],
      fields: { node: o.nodeId, startedAt, reason: null },
    });
    if (!took.ok) {
      await free(id, groups);
      return took.state ?? 'gone';
    }
    const renew = groups.length
      ? setInterval(() => {
          o.queue.limits
            .renew(id, groups)
            .catch((e: unknown) =>
              log.warn({ job: id, err: String(e) }, 'could not renew the concurrency slot (Redis away?)'),
            );
        }, SLOT_RENEW_MS)
      : undefined;
    try {
      return await runAttempt(bull, token, signal, id, record, took.attempt, took.from, startedAt);
    } finally {
      clearInterval(renew);
      // Every end (passed, failed, errored, canceled, a retry) frees the slot; the next in line runs.
      await free(id, groups);
    }
  }

  /**
   * A lost node's job that must wait for its group's slot (its lease ran out and another job of
   * the group took it): the record says queued, the lost attempt errored, while it waits.
   */
  async function requeueLost(id: string, record: JobRecord): Promise<void> {
    const r = await store.transition(id, 'queued', {
      attempt: record.attempt,
      onlyFrom: ['running'],
      fields: {},
    });
    if (!r.ok) return;
    await store.recordAttempt(id, {
      n: record.attempt,
      node: record.node ?? 'unknown',
      startedAt: record.startedAt ?? new Date().toISOString(),
      endedAt: new Date().toISOString(),
      outcome: 'errored',
      reason: 'infra',
      error: 'node lost (its lock expired)',
    });
  }

  /** Frees the job's slots and promotes the held jobs that now fit (a dead node's slots free when their lease ends). */
  async function free(id: string, groups: readonly string[]): Promise<void> {
    if (groups.length === 0) return;
    try {
      await o.queue.promote(await o.queue.limits.release(id, groups));
    } catch (e) {
      log.warn({ job: id, err: String(e) }, 'could not free the concurrency slot; its lease ends it');
    }
  }

  async function wake(groups: readonly string[]): Promise<void> {
    try {
      await o.queue.promote(await o.queue.limits.wake(groups));
    } catch (e) {
      log.warn({ err: String(e) }, 'could not wake held jobs');
    }
  }

  async function runAttempt(
    bull: Job,
    token: string | undefined,
    signal: AbortSignal | undefined,
    id: string,
    record: JobRecord,
    attempt: number,
    from: JobState,
    startedAt: string,
  ): Promise<string> {
    if (from === 'running') {
      // The previous attempt's node went silent and lost the job's lock: that attempt errored.
      await store.recordAttempt(id, {
        n: attempt - 1,
        node: record.node ?? 'unknown',
        startedAt: record.startedAt ?? startedAt,
        endedAt: startedAt,
        outcome: 'errored',
        reason: 'infra',
        error: 'node lost (its lock expired)',
      });
    }
    await store.recordAttempt(id, { n: attempt, node: o.nodeId, startedAt });
    const ctl = new AbortController();
    signal?.addEventListener('abort', () => ctl.abort(signal.reason), { once: true });
    const outcome = await handler(
      {
        id,
        record,
        attempt,
        startedAt,
        lastAttempt: attempt >= MAX_ATTEMPTS || bull.attemptsMade + 1 >= MAX_ATTEMPTS,
        enqueuedAtMs: bull.timestamp,
        update: async ({ effectiveLimits, ...rest }) =>
          (
            await store.transition(id, 'running', {
              attempt,
              onlyFrom: ['running'],
              fields: {
                ...rest,
                ...(effectiveLimits ? { effectiveLimits: JSON.stringify(effectiveLimits) } : {}),
              },
            })
          ).ok,
      },
      ctl.signal,
    );
    return settle(id, attempt, startedAt, outcome, bull, token);
  }

  async function settle(
    id: string,
    attempt: number,
    startedAt: string,
    out: AttemptOutcome,
    bull: Job,
    token: string | undefined,
  ): Promise<string> {
    const endedAt = new Date().toISOString();
    if (out.state !== 'errored') {
      // The attempt first: a reader that sees the job final sees how its last attempt ended.
      await store.recordAttempt(id, {
        n: attempt,
        node: o.nodeId,
        startedAt,
        endedAt,
        outcome: out.state,
        ...(out.exitCode === undefined ? {} : { exitCode: out.exitCode }),
        ...(out.reason ? { reason: out.reason } : {}),
        ...(out.error ? { error: out.error } : {}),
      });
      const owned = await finish(id, attempt, out.state, {
        ...(out.exitCode === undefined ? {} : { exitCode: out.exitCode }),
        reason: out.reason ?? null,
        finishedAt: endedAt,
        logBytes: out.logBytes,
      });
      if (!owned && out.state !== 'canceled') {
        // Cut off from Redis while it ran (a partition): the node was lost and the job re-run
        // elsewhere. This run's end does not count, and the record must not list it as a second
        // passed (or failed) attempt.
        await store.recordAttempt(id, {
          n: attempt,
          node: o.nodeId,
          startedAt,
          endedAt,
          outcome: 'errored',
          reason: 'infra',
          ...(out.exitCode === undefined ? {} : { exitCode: out.exitCode }),
          error: `node ${o.nodeId} lost the job while it ran (its heartbeats did not reach Redis): it was re-queued, and this run's ${out.state} was discarded`,
        });
        return out.state;
      }
      await out.onRecorded?.();
      if (out.error) throw new UnrecoverableError(out.error);
      return out.state;
    }
    await store.recordAttempt(id, {
      n: attempt,
      node: o.nodeId,
      startedAt,
      endedAt,
      outcome: 'errored',
      reason: 'infra',
      error: out.error,
    });
    if (out.retryDelayMs === undefined) {
      await finish(id, attempt, 'errored', { reason: 'infra', finishedAt: endedAt, logBytes: out.logBytes });
      await out.onRecorded?.();
      throw new UnrecoverableError(out.error);
    }
    await finish(id, attempt, 'queued', {});
    await out.onRecorded?.();
    // BullMQ's own retry (its fixed back-off), without a lock token to move the job.
    if (!token) throw new Error(out.error);
    await bull.moveToDelayed(Date.now() + out.retryDelayMs, token);
    throw new DelayedError();
  }

  return {
    async start() {
      void worker.run();
      await worker.waitUntilReady();
    },
    pause: () => worker.pause(true),
    resume: () => worker.resume(),
    close() {
      closing ??= (async () => {
        await worker.close();
        await o.connection.quit().catch(() => undefined);
      })();
      return closing;
    },
  };
}
