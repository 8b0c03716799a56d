import { DelayedError, type Job, Queue, UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { z } from 'zod';
import type { Keys } from '../src/core/index.ts';
import { PermanentTaskError } from './permanent-task-error.ts';

export interface TaskQueueOptions<T> {
  /** A normal (non-blocking) connection, for adding tasks. */
  redis: Redis;
  /** Makes the connection the task worker blocks on. */
  duplicate: () => Redis;
  keys: Keys;
  /** The queue's name (one of `Keys`: `githubEventsQueue`, `githubChecksQueue`). */
  name: string;
  /** What a task's data must be: a task whose data does not parse fails for good. */
  schema: z.ZodType<T>;
  /** Tries of one task before it fails for good. */
  attempts: number;
  /** How long a finished task is kept (seconds; 0 removes it at once): a task added again with its id meanwhile is not run again. */
  keepCompletedSeconds: number;
  /** How long a task that failed for good is kept, in seconds. */
  keepFailedSeconds: number;
  /** Tasks run at once. Default 4. */
  concurrency?: number;
  /** First retry delay after a failed try, in ms; doubles up to `retryMaxMs`. Default 1000. */
  retryBaseMs?: number;
  /** Longest retry delay, in ms. Default 60000. */
  retryMaxMs?: number;
  /** Told about each failed try (the task is retried with backoff unless it failed for good). */
  onFailed?: (f: { id: string | undefined; data: unknown; attempt: number; err: Error }) => void;
  /** Told about connection errors (the queue reconnects by itself). */
  onError?: (err: Error) => void;
}

/** What a handler may return: `defer` runs the task again after that many ms, without counting a try. */
export type TaskResult = undefined | { deferMs: number };

export interface TaskQueue<T> {
  /** Adds a task; a task with the same id still kept (waiting, running or finished) is not added again. */
  add(id: string, data: T): Promise<void>;
  /** Starts running tasks with `handler`. Throw PermanentTaskError for a task no retry can help. */
  start(handler: (data: T) => Promise<TaskResult>): Promise<void>;
  /** Tasks kept in any state (waiting, running, delayed, finished, failed). */
  count(): Promise<number>;
  /** Idempotent. Order: the worker (tasks in flight finish), its connection, then the queue. */
  close(): Promise<void>;
}

/**
 * A background task queue with retries and backoff, for work that must survive a restart and
 * outlive the request that asked for it (GitHub deliveries, check run syncs). BullMQ stays inside
 * `queue/`: its callers give data and a handler.
 */
export function createTaskQueue<T>(o: TaskQueueOptions<T>): TaskQueue<T> {
  const queue = new Queue(o.name, { connection: o.redis, prefix: o.keys.bullPrefix });
  queue.on('error', (e) => o.onError?.(e));
  const base = o.retryBaseMs ?? 1000;
  const max = o.retryMaxMs ?? 60_000;
  let worker: Worker | undefined;
  let connection: Redis | undefined;
  let closing: Promise<void> | undefined;

  return {
    async add(id, data) {
      await queue.add('task', o.schema.parse(data), {
        jobId: id,
        attempts: o.attempts,
        backoff: { type: 'custom' },
        removeOnComplete: o.keepCompletedSeconds > 0 ? { age: o.keepCompletedSeconds } : true,
        removeOnFail: { age: o.keepFailedSeconds },
      });
    },
    async start(handler) {
      connection = o.duplicate();
      worker = new Worker(
        o.name,
        async (job: Job, token?: string) => {
          const parsed = o.schema.safeParse(job.data);
          if (!parsed.success) {
            throw new UnrecoverableError(
              `task ${job.id}: its data is not valid: ${parsed.error.issues[0]?.message ?? ''}`,
            );
          }
          let result: TaskResult;
          try {
            result = await handler(parsed.data);
          } catch (e) {
            if (e instanceof PermanentTaskError) throw new UnrecoverableError(e.message);
            throw e;
          }
          if (result) {
            await job.moveToDelayed(Date.now() + result.deferMs, token);
            throw new DelayedError();
          }
        },
        {
          connection,
          prefix: o.keys.bullPrefix,
          concurrency: o.concurrency ?? 4,
          settings: {
            backoffStrategy: (attempts: number) => Math.min(max, base * 2 ** Math.max(0, attempts - 1)),
          },
        },
      );
      worker.on('failed', (job, err) =>
        o.onFailed?.({ id: job?.id, data: job?.data, attempt: job?.attemptsMade ?? 0, err }),
      );
      worker.on('error', (e) => o.onError?.(e));
      await worker.waitUntilReady();
    },
    count: () => queue.getJobCountByTypes('wait', 'active', 'completed', 'failed', 'delayed', 'prioritized'),
    close() {
      closing ??= (async () => {
        await worker?.close().catch(() => undefined);
        await connection?.quit().catch(() => undefined);
        await queue.close().catch(() => undefined);
      })();
      return closing;
    },
  };
}
