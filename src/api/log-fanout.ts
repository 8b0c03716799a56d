import type { Redis } from 'ioredis';
import {
  compareLogIds,
  type LogData,
  type LogPage,
  lastLogId,
  readLogBlocking,
  readLogPage,
} from '../../queue/index.ts';
import { ArchwayError, type Keys, toError } from '../core/index.ts';

/**
 * Entries one pull of a follower reads from Redis: chunks are at most 16 KiB, so a follower whose
 * client stops reading holds at most 256 KiB (1000 followers, the default cap: 250 MiB at worst).
 */
const PAGE = 16;
/**
 * Entries one read of a job's reader takes (at most 1 MiB): a fast job's worker writes its log
 * in MULTIs of up to 1 MiB (queue/log-writer.ts), which one read brings in whole.
 */
const READ_COUNT = 64;
/**
 * Bytes of recent chunks a job's reader keeps for the followers that are caught up (one reader
 * per followed job): two reads' worth, so a follower that is one read behind still finds its
 * next chunks here, not in a read of its own from Redis (at 100 MB/s, 256 KiB was 2.5 ms).
 */
const RING_BYTES = 2 * 1024 * 1024;
/** How long the reader blocks before it asks whether the job has finished. */
const BLOCK_MS = 1000;

export class TooManyFollowersError extends ArchwayError {
  constructor(message: string) {
    super('TOO_MANY_FOLLOWERS', message, { httpStatus: 429 });
  }
}

export interface LogFanoutOptions {
  /** The API's shared, non-blocking connection: every follower's catch-up reads go through it. */
  redis: Redis;
  keys: Keys;
  /** One connection per followed job (it blocks in XREAD); closed when the job's last follower leaves. */
  createBlockingRedis: () => Redis;
  /** True when the job has finished (so its log will not grow). */
  isFinished: (jobId: string) => Promise<boolean>;
  /** Most followers of one job. */
  maxPerJob: number;
  /** Most followers in this process. */
  maxTotal: number;
  /**
   * How long a follower's client may leave written log unread (its connection's buffers full)
   * before it is cut off, so that it frees its place. Default 30 s.
   */
  stallMs?: number;
}

export interface LogFollower {
  /**
   * The log from `after` (exclusive), as it is written, until its end: in pages (what one read
   * brought, never empty), which a follow writes in one go. The chunks are shared with the job's
   * other followers: never change them.
   */
  pages(after: string | undefined, signal: AbortSignal): AsyncGenerator<LogData[]>;
  /** Idempotent: frees the follower's place (and the job's reader, when it was the last). */
  leave(): void;
}

export interface LogFanout {
  /** Takes a follower's place; a TooManyFollowersError (429) when a cap is reached. */
  join(jobId: string): LogFollower;
  readonly followers: number;
  /** Jobs with a reader (each one Redis connection). */
  readonly readers: number;
  /** How long a follower's client may leave written log unread before it is cut off (LogFanoutOptions.stallMs). */
  readonly stallMs: number;
  /** Ends every reader: their followers fail and end. */
  close(): void;
}

interface Entry {
  id: string;
  chunk?: LogData;
  end?: true;
}

/** One reader of one job's log, shared by its followers. */
interface Reader {
  followers: number;
  /** Entries after `ringStart` up to the newest read, for followers that are caught up. */
  ring: Entry[];
  ringBytes: number;
  /** The ring holds every entry after this id (undefined until the reader knows where it starts). */
  ringStart: string | undefined;
  /** The log will not grow: its end marker was read, or the job finished. */
  ended: boolean;
  error: Error | undefined;
  /** Bumped on every change; a follower that saw the same generation before and after a read may wait. */
  gen: number;
  wake: Set<() => void>;
  conn: Redis | undefined;
  stopped: boolean;
}

/**
 * The API's log followers: one Redis reader per followed job (not one connection per follower),
 * fanning its entries out to every follower of that job. A follower that is behind (it resumed
 * from an old id, or its client reads slowly) catches up with paged XRANGE reads on the shared
 * connection, so what it holds stays bounded and a slow client never holds up the others.
 */
export function createLogFanout(o: LogFanoutOptions): LogFanout {
  const readers = new Map<string, Reader>();
  /** Followers per job, caught up or not. */
  const perJob = new Map<string, number>();
  let total = 0;

  const notify = (r: Reader) => {
    r.gen++;
    for (const w of r.wake) w();
    r.wake.clear();
  };

  function stop(jobId: string, r: Reader): void {
    r.stopped = true;
    r.conn?.disconnect();
    if (readers.get(jobId) === r) readers.delete(jobId);
    notify(r);
  }

  /** Reads the job's log as it grows, into the ring, until it ends or its last follower leaves. */
  async function run(jobId: string, r: Reader): Promise<void> {
    try {
      let position = await lastLogId(o.redis, o.keys, jobId);
      r.ringStart = position;
      notify(r);
      if (r.stopped) return;
      r.conn = o.createBlockingRedis();
      while (!r.stopped && !r.ended) {
        let page: LogPage = await readLogBlocking(r.conn, o.keys, jobId, position, {
          blockMs: BLOCK_MS,
          count: READ_COUNT,
        });
        if (page.last === undefined) {
          if (!(await o.isFinished(jobId))) continue;
          // One last look: the end marker may have landed between the read and the check.
          page = await readLogPage(o.redis, o.keys, jobId, position, 10_000);
          r.ended = true;
        }
        append(r, page);
        position = page.last ?? position;
        if (page.ended) r.ended = true;
        notify(r);
      }
    } catch (e) {
      if (!r.stopped) r.error = toError(e);
    } finally {
      r.conn?.disconnect();
      if (r.error) stop(jobId, r);
      else notify(r);
    }
  }

  function append(r: Reader, page: LogPage): void {
    // The chunks, then the end marker (page.last, when the page ended).
    for (const c of page.chunks) {
      r.ring.push({ id: c.id, chunk: c });
      r.ringBytes += c.data.length;
    }
    if (page.ended && page.last !== undefined) r.ring.push({ id: page.last, end: true });
    while (r.ringBytes > RING_BYTES && r.ring.length > 1) {
      const dropped = r.ring.shift() as Entry;
      r.ringBytes -= dropped.chunk?.data.length ?? 0;
      r.ringStart = dropped.id;
    }
  }

  /** What the ring holds after `last`, or undefined when it does not reach back that far. */
  function fromRing(r: Reader, last: string): LogPage | undefined {
    if (r.ringStart === undefined || compareLogIds(last, r.ringStart) < 0) return undefined;
    // Followers are mostly near the end: look back from there.
    let i = r.ring.length;
    while (i > 0 && compareLogIds((r.ring[i - 1] as Entry).id, last) > 0) i--;
    const entries = r.ring.slice(i);
    const chunks = entries.flatMap((e) => (e.chunk ? [e.chunk] : []));
    const lastId = entries.at(-1)?.id;
    const ended = entries.some((e) => e.end);
    return lastId === undefined ? { chunks, ended } : { chunks, ended, last: lastId };
  }

  function readerOf(jobId: string): Reader {
    let r = readers.get(jobId);
    if (!r) {
      r = {
        followers: 0,
        ring: [],
        ringBytes: 0,
        ringStart: undefined,
        ended: false,
        error: undefined,
        gen: 0,
        wake: new Set(),
        conn: undefined,
        stopped: false,
      };
      readers.set(jobId, r);
      void run(jobId, r);
    }
    return r;
  }

  return {
    join(jobId) {
      if (total >= o.maxTotal)
        throw new TooManyFollowersError(
          `this API already serves ${o.maxTotal} log followers (ARCHWAY_LOG_FOLLOWERS_MAX); read the log without following, or try again later`,
        );
      if ((perJob.get(jobId) ?? 0) >= o.maxPerJob)
        throw new TooManyFollowersError(
          `job ${jobId} already has ${o.maxPerJob} log followers (ARCHWAY_LOG_FOLLOWERS_PER_JOB); read the log without following, or try again later`,
        );
      total++;
      perJob.set(jobId, (perJob.get(jobId) ?? 0) + 1);
      /** The job's shared reader, once this follower has caught up with what Redis holds. */
      let reader: Reader | undefined;
      let left = false;
      return {
        async *pages(after, signal) {
          let last = after ?? '0-0';
          while (!signal.aborted && !left) {
            const gen = reader?.gen ?? 0;
            if (reader?.error) throw reader.error;
            const page =
              (reader && fromRing(reader, last)) ?? (await readLogPage(o.redis, o.keys, jobId, last, PAGE));
            if (page.chunks.length > 0) yield page.chunks;
            if (page.last !== undefined) last = page.last;
            if (page.ended) return;
            if (page.last !== undefined) continue;
            if (!reader) {
              // Caught up with what Redis holds: from here on the job's shared reader brings the rest.
              reader = readerOf(jobId);
              reader.followers++;
              continue;
            }
            if (reader.error) throw reader.error;
            if (reader.ended) return;
            if (reader.stopped) throw new Error('the log fan-out was closed');
            if (reader.gen !== gen) continue;
            const r = reader;
            await new Promise<void>((resolve) => {
              const done = () => {
                signal.removeEventListener('abort', done);
                resolve();
              };
              r.wake.add(done);
              signal.addEventListener('abort', done, { once: true });
            });
          }
        },
        leave() {
          if (left) return;
          left = true;
          total--;
          const n = (perJob.get(jobId) ?? 1) - 1;
          if (n > 0) perJob.set(jobId, n);
          else perJob.delete(jobId);
          if (!reader) return;
          reader.followers--;
          if (reader.followers <= 0) stop(jobId, reader);
        },
      };
    },
    get followers() {
      return total;
    },
    get readers() {
      return readers.size;
    },
    stallMs: o.stallMs ?? 30_000,
    close() {
      for (const [id, r] of readers) stop(id, r);
    },
  };
}
