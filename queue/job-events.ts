import type { Redis } from 'ioredis';
import { z } from 'zod';
import { JobState, type Keys, type Logger, toError } from '../src/core/index.ts';
import { createLease } from './lease.ts';

/** One entry of the job events stream (written by the job store at each transition). */
export const JobEvent = z.object({
  /** The stream entry id; pass it back as `after` to read what follows. */
  id: z.string(),
  job: z.string().min(1),
  /** The state before; `undefined` when the job was just created. */
  from: JobState.optional(),
  to: JobState,
  attempt: z.int().nonnegative(),
  /** Why a job ended when it did not simply exit (`timeout`, `canceled`, ...); `undefined` when none. */
  reason: z.string().optional(),
  /** When it happened (ms since the epoch, from the entry id). */
  at: z.int(),
});
export type JobEvent = z.infer<typeof JobEvent>;

/** A reader's saved place in the stream, so that a restart goes on from the next entry. */
export interface EventsPosition {
  /** The saved position; the first time, the end of the stream (a new reader sees what comes next, not the past). */
  get(): Promise<string>;
  set(id: string): Promise<void>;
}

export interface JobEvents {
  /** The id of the newest event ('0-0' when none). */
  lastEventId(): Promise<string>;
  /**
   * Events after `after`, waiting up to `blockMs` for one (XREAD BLOCK). `conn` must be a
   * connection of the caller's own: a blocked connection serves nothing else.
   */
  readEvents(
    conn: Redis,
    after: string,
    blockMs: number,
    count?: number,
  ): Promise<{ events: JobEvent[]; lastId: string }>;
  /** A position stored at `key` (one of `Keys`). */
  position(key: string): EventsPosition;
}

function parseEntry(id: string, fields: string[]): JobEvent | undefined {
  const f: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i] as string] = fields[i + 1] as string;
  const e = JobEvent.safeParse({
    id,
    job: f.job,
    ...(f.from ? { from: f.from } : {}),
    to: f.to,
    attempt: Number(f.attempt ?? 0),
    ...(f.reason ? { reason: f.reason } : {}),
    at: Number(id.split('-')[0]),
  });
  return e.success ? e.data : undefined;
}

/** The reader of the job events stream (`keys.events`). */
export function createJobEvents(redis: Redis, keys: Keys): JobEvents {
  async function lastEventId() {
    const last = await redis.xrevrange(keys.events, '+', '-', 'COUNT', 1);
    return last[0]?.[0] ?? '0-0';
  }
  return {
    lastEventId,
    async readEvents(conn, after, blockMs, count = 200) {
      const res = (await conn.xread('COUNT', count, 'BLOCK', blockMs, 'STREAMS', keys.events, after)) as
        | [string, [string, string[]][]][]
        | null;
      const entries = res?.[0]?.[1] ?? [];
      const events: JobEvent[] = [];
      for (const [id, fields] of entries) {
        const e = parseEntry(id, fields);
        if (e) events.push(e);
      }
      // Entries that are not events (skipped above) still move the reader on.
      return { events, lastId: entries.at(-1)?.[0] ?? after };
    },
    position(key) {
      return {
        async get() {
          const saved = await redis.get(key);
          if (saved) return saved;
          await redis.set(key, await lastEventId(), 'NX');
          return (await redis.get(key)) ?? '0-0';
        },
        async set(id) {
          await redis.set(key, id);
        },
      };
    },
  };
}

export interface JobEventFollowerOptions {
  redis: Redis;
  /** Makes the connection the follower blocks on in XREAD. */
  duplicate: () => Redis;
  keys: Keys;
  /** One follower of this kind at a time, host- and process-wide: the others stand by. */
  leaseKey: string;
  /** Where the follower saves how far it got (a restart goes on from the next entry). */
  positionKey: string;
  logger: Logger;
  /** What the follower does, for its log lines ("reporting", "advancing builds"). */
  what: string;
}

export interface JobEventFollower {
  /** Sets its position (the end of the stream the first time) and starts following. */
  start(): Promise<void>;
  /** Idempotent: ends the loop (within a second), releases the lease, then its connection. */
  close(): Promise<void>;
}

/** How long a follower's lease lasts; it is renewed at every read (each blocks at most 1 s). */
const FOLLOWER_LEASE_MS = 15_000;

/**
 * Hands every job event, in order, to `handle`, under a lease so one process follows at a time,
 * saving its position after each entry. A failed entry (Redis away, a record that does not
 * parse, `handle` throwing) is tried again a second later: nothing is skipped.
 */
export function createJobEventFollower(
  o: JobEventFollowerOptions,
  handle: (e: JobEvent) => Promise<void>,
): JobEventFollower {
  const lease = createLease(o.redis, o.leaseKey, FOLLOWER_LEASE_MS);
  const events = createJobEvents(o.redis, o.keys);
  const position = events.position(o.positionKey);
  let stopped = false;
  let loop: Promise<void> | undefined;
  let conn: Redis | undefined;
  let closing: Promise<void> | undefined;

  async function run(): Promise<void> {
    conn = o.duplicate();
    while (!stopped) {
      try {
        if (!(await lease.take())) {
          await new Promise((r) => setTimeout(r, 1000));
          continue;
        }
        const read = await events.readEvents(conn, await position.get(), 1000);
        for (const e of read.events) {
          if (stopped) break;
          await handle(e);
          await position.set(e.id);
        }
        if (!stopped && read.lastId !== read.events.at(-1)?.id) await position.set(read.lastId);
      } catch (e) {
        if (stopped) break;
        o.logger.warn({ err: toError(e).message }, `${o.what} failed; trying again`);
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  return {
    async start() {
      await position.get();
      loop = run();
    },
    close() {
      closing ??= (async () => {
        stopped = true;
        await loop?.catch(() => undefined);
        await lease.release();
        await conn?.quit().catch(() => undefined);
      })();
      return closing;
    },
  };
}
