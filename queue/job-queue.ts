import { createHash, randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  type Arch,
  ArchwayError,
  FINAL_STATES,
  type JobRecord,
  type JobSpec,
  type Keys,
} from '../src/core/index.ts';
import { type ConcurrencyLimits, createConcurrencyLimits, type Waiter } from './concurrency-limits.ts';
import { type CancelReason, createJobStore, type JobStore, type ListFilter } from './job-store.ts';
import { appendLogNote } from './log-writer.ts';

/** Attempts a job gets when its host fails (errored attempts are retried elsewhere). */
export const MAX_ATTEMPTS = 3;

/**
 * Where a queued job stands in its arch's queue (issue #13), in the order BullMQ's workers take
 * jobs: the `wait` list first (from its tail), then the `prioritized` set (lowest score first:
 * priority, then arrival). Delayed jobs are in no line until they are promoted.
 */
export type QueuePlace =
  /** In line: `position` 1 is the next job a node of the arch takes; `of` jobs are in line. */
  | { status: 'waiting'; position: number; of: number }
  /** Not in line until `until` (epoch ms): a retry in back-off (or handed off from the node where it errored). */
  | { status: 'delayed'; until: number; of: number }
  /** Held by a concurrency cap (the record's `waitReason` says which): in line once a job of its group ends. */
  | { status: 'held'; of: number }
  /** A node has taken it from the line and is starting it. */
  | { status: 'starting'; of: number };

/**
 * One round trip for QueuePlace, nothing when the record is not queued. KEYS: BullMQ's wait,
 * prioritized, delayed and active keys of the arch and the job's record (one hash tag: one slot
 * on a cluster); ARGV[1]: the job id. No scan of a big line: ZRANK is O(log n); LPOS from the
 * wait list's tail costs the jobs ahead of it (the wait list holds only jobs put back by a stall
 * check: every archway job has a priority); the active list holds at most the arch's busy slots.
 * BullMQ's delayed score is `timestamp * 0x1000 + a counter` (its getDelayedScore).
 */
const PLACE_LUA = `
if redis.call('HGET', KEYS[5], 'state') ~= 'queued' then return false end
local id = ARGV[1]
local inWait = redis.call('LLEN', KEYS[1])
local of = inWait + redis.call('ZCARD', KEYS[2])
local rank = redis.call('ZRANK', KEYS[2], id)
if rank then return {'waiting', inWait + rank + 1, of} end
local score = redis.call('ZSCORE', KEYS[3], id)
if score then
  if redis.call('HEXISTS', KEYS[5], 'waitReason') == 1 then return {'held', 0, of} end
  return {'delayed', math.floor(tonumber(score) / 4096), of}
end
local i = redis.call('LPOS', KEYS[1], id, 'RANK', -1)
if i then return {'waiting', inWait - i, of} end
if redis.call('LPOS', KEYS[4], id) then return {'starting', 0, of} end
return false
`;

export interface JobQueueOptions {
  /** A normal (non-blocking) connection. */
  redis: Redis;
  keys: Keys;
  /** How long a finished job's log and record are kept, in seconds. */
  logRetentionSeconds: number;
  /** Told about connection errors of the BullMQ queues (they reconnect by themselves). */
  onError?: (err: Error) => void;
}

export interface SubmitOptions {
  /** With the same key (and client), a retried submission returns the first job instead of making another. */
  idempotencyKey?: string | undefined;
  /** Who submits (a token's name): idempotency keys are scoped by it. */
  clientId: string;
  /** Things to tell the user, stored on the job (no live worker for the arch, ...). */
  warnings?: string[];
  /** The finished job this submission is a new run of (recorded on both jobs). */
  restartOf?: string;
  /**
   * The job's id, chosen by the caller (a webhook build names its jobs before it submits them, so
   * a job's script and its check run know its id). Submitting the same id again returns that job.
   */
  jobId?: string;
}

export interface JobQueue {
  readonly store: JobStore;
  /** Per-repository and per-label concurrency caps. */
  readonly limits: ConcurrencyLimits;
  /** Moves held jobs whose slot has freed from the delayed set to the queue (one no longer queued leaves its lines). */
  promote(waiters: readonly Waiter[]): Promise<void>;
  /** Writes the job record and adds the job to its arch's queue; idempotent on the job id. */
  submit(spec: JobSpec, o: SubmitOptions): Promise<{ job: JobRecord; created: boolean }>;
  get(id: string): Promise<JobRecord | undefined>;
  list(filter: ListFilter): Promise<{ jobs: JobRecord[]; next?: number }>;
  /**
   * Cancels a job: a queued one is canceled at once and never starts; a running one gets the
   * durable cancel flag and a message on the cancel channel (its worker kills it within 1 s).
   */
  cancel(id: string, opts?: { reason?: CancelReason }): Promise<JobRecord>;
  /**
   * A new run of a finished job with the same spec: a new job whose record says `restartOf` the
   * old one, and the old one says `restartedBy` the new one. Its id is derived from the old one's,
   * so concurrent restarts make one job. 409 while the job has not finished, when it was
   * restarted already (restart its newest run), or when it had secrets (they are not kept after
   * a job ends); 404 for an unknown job.
   */
  restart(id: string, o: { clientId: string }): Promise<{ job: JobRecord; created: boolean }>;
  /** Records `newId` as the new run of `oldId` (both records), for restarts made elsewhere (a build's). */
  linkRestart(oldId: string, newId: string): Promise<void>;
  /** Waiting (and delayed/prioritized) jobs per arch. */
  depth(arch: Arch): Promise<number>;
  /**
   * Where a queued job stands in its arch's queue, read with its record's state in one round
   * trip; undefined when its record is not queued, or it is not in the queue (between its record
   * and its enqueue).
   */
  place(job: Pick<JobRecord, 'id' | 'arch'>): Promise<QueuePlace | undefined>;
  close(): Promise<void>;
}

export class JobNotFoundError extends ArchwayError {
  constructor(id: string) {
    super('JOB_NOT_FOUND', `no job '${id}'`, { httpStatus: 404 });
  }
}

export class IdempotencyConflictError extends ArchwayError {
  constructor(key: string, id: string) {
    super(
      'IDEMPOTENCY_CONFLICT',
      `Idempotency-Key '${key}' was used for job ${id} with a different request`,
      { httpStatus: 409 },
    );
  }
}

export class JobNotRestartableError extends ArchwayError {
  constructor(id: string, why: string) {
    super('JOB_NOT_RESTARTABLE', `job ${id} ${why}`, { httpStatus: 409 });
  }
}

export class JobFinishedError extends ArchwayError {
  constructor(id: string, state: string) {
    super('JOB_FINISHED', `job ${id} has already finished (${state}); there is nothing to cancel`, {
      httpStatus: 409,
    });
  }
}

export function createJobQueue(o: JobQueueOptions): JobQueue {
  const store = createJobStore(o.redis, o.keys, { retentionSeconds: o.logRetentionSeconds });
  const limits = createConcurrencyLimits(o.redis, o.keys);
  o.redis.defineCommand('awQueuePlace', { numberOfKeys: 5, lua: PLACE_LUA });
  const scripts = o.redis as Redis & {
    awQueuePlace(...args: string[]): Promise<[string, number, number] | null>;
  };
  const queues = new Map<Arch, Queue>();
  const queueOf = (arch: Arch) => {
    let q = queues.get(arch);
    if (!q) {
      q = new Queue(o.keys.queueName(arch), { connection: o.redis, prefix: o.keys.bullPrefix });
      q.on('error', (err) => o.onError?.(err));
      queues.set(arch, q);
    }
    return q;
  };

  async function enqueue(id: string, spec: JobSpec): Promise<void> {
    await queueOf(spec.arch).add(
      'job',
      { id },
      {
        jobId: id,
        priority: spec.priority,
        attempts: MAX_ATTEMPTS,
        backoff: { type: 'fixed', delay: 1000 },
        removeOnComplete: { age: 24 * 3600 },
        removeOnFail: { age: 7 * 24 * 3600 },
      },
    );
  }

  async function must(id: string): Promise<JobRecord> {
    const job = await store.get(id);
    if (!job) throw new JobNotFoundError(id);
    return job;
  }

  async function submit(spec: JobSpec, s: SubmitOptions): Promise<{ job: JobRecord; created: boolean }> {
    const specHash = createHash('sha256').update(JSON.stringify(spec)).digest('hex');
    const id = s.jobId
      ? s.jobId
      : s.idempotencyKey
        ? `j${createHash('sha256').update(`${s.clientId}\0${s.idempotencyKey}`).digest('hex').slice(0, 24)}`
        : `j${randomBytes(12).toString('hex')}`;
    const created = await store.create(id, spec, {
      warnings: s.warnings ?? [],
      specHash,
      restartOf: s.restartOf,
    });
    if (!created) {
      if ((await store.field(id, 'specHash')) !== specHash)
        throw new IdempotencyConflictError(s.idempotencyKey ?? '', id);
      const job = await must(id);
      // A first submission that wrote the record but died before the enqueue is completed by its retry.
      if (job.state === 'queued' && job.attempt === 0) await enqueue(id, spec);
      return { job, created: false };
    }
    await enqueue(id, spec);
    return { job: await must(id), created: true };
  }

  async function promoteOne(w: Waiter): Promise<void> {
    const job = await store.get(w.id);
    if (job?.state !== 'queued') {
      if (job) await limits.forget(job);
      return;
    }
    const entry = await queueOf(w.arch).getJob(w.id);
    if (!entry) return limits.forget(job);
    // Not delayed any more (taken, or promoted by another party): it looks for its slot itself.
    await entry.promote().catch(() => undefined);
  }

  return {
    store,
    limits,
    async promote(waiters) {
      await Promise.all(waiters.map(promoteOne));
    },
    submit,
    async restart(id, r) {
      const old = await must(id);
      if (!FINAL_STATES.includes(old.state))
        throw new JobNotRestartableError(
          id,
          `is still ${old.state}: it can be restarted once it has finished`,
        );
      if (old.restartedBy)
        throw new JobNotRestartableError(
          id,
          `was restarted already, as ${old.restartedBy}: restart that one (the newest run)`,
        );
      if (Object.keys(old.spec.secrets).length > 0)
        throw new JobNotRestartableError(
          id,
          'had secrets, which are not kept after a job ends: submit it again with them',
        );
      const newId = `j${createHash('sha256').update(`restart\0${id}`).digest('hex').slice(0, 24)}`;
      const made = await submit(old.spec, {
        clientId: r.clientId,
        jobId: newId,
        restartOf: id,
      });
      await store.markRestarted(id, newId);
      return made;
    },
    async linkRestart(oldId, newId) {
      await store.markRestarted(oldId, newId);
      await o.redis.eval(
        "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'restartOf', ARGV[1]) end",
        1,
        o.keys.job(newId),
        oldId,
      );
    },
    get: (id) => store.get(id),
    list: (f) => store.list(f),
    async cancel(id, c = {}) {
      const reason = c.reason ?? 'canceled';
      const job = await must(id);
      if (FINAL_STATES.includes(job.state)) throw new JobFinishedError(id, job.state);
      // Only straight from queued here: a running job is ended by its worker, which owns its container.
      const r = await store.transition(id, 'canceled', {
        onlyFrom: ['queued'],
        fields: { reason, finishedAt: new Date().toISOString() },
      });
      if (r.ok) {
        await queueOf(job.arch)
          .remove(id)
          .catch(() => undefined);
        await limits.forget(job);
        await appendLogNote(
          o.redis,
          o.keys,
          id,
          reason === 'superseded'
            ? '[archway] canceled before it started: superseded by a newer build\n'
            : '[archway] canceled before it started\n',
          o.logRetentionSeconds,
        );
        return must(id);
      }
      await store.requestCancel(id, reason);
      return must(id);
    },
    depth: (arch) => queueOf(arch).getJobCountByTypes('wait', 'prioritized', 'delayed'),
    async place(job) {
      const q = queueOf(job.arch);
      const r = await scripts.awQueuePlace(
        ...(['wait', 'prioritized', 'delayed', 'active'] as const).map((t) => q.toKey(t)),
        o.keys.job(job.id),
        job.id,
      );
      if (!r) return undefined;
      const [status, n, of] = r;
      switch (status) {
        case 'waiting':
          return { status, position: n, of };
        case 'delayed':
          return { status, until: n, of };
        case 'held':
        case 'starting':
          return { status, of };
        default:
          throw new Error(`queue place script answered '${status}'`);
      }
    },
    async close() {
      await Promise.all([...queues.values()].map((q) => q.close()));
    },
  };
}
