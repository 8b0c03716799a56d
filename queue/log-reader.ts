import type { Redis } from 'ioredis';
import type { Keys } from '../src/core/index.ts';

export interface LogChunk {
  /** The stream entry id: a resume point (SSE's Last-Event-ID). */
  id: string;
  text: string;
}

/** Every chunk of a job's log after `after` (exclusive; default: from the start). */
export async function readLog(
  redis: Redis,
  keys: Keys,
  jobId: string,
  after?: string,
): Promise<{ chunks: LogChunk[]; ended: boolean }> {
  const entries = (await redis.xrange(keys.log(jobId), after ? `(${after}` : '-', '+')) as [
    string,
    string[],
  ][];
  return toChunks(entries);
}

/** One chunk of a job's log as Redis holds it: the bytes, never decoded (a follow passes them on as they are). */
export interface LogData {
  /** The stream entry id: a resume point (SSE's Last-Event-ID). */
  id: string;
  /** UTF-8, cut on character boundaries by the writer. */
  data: Buffer;
}

/** Entries of a log read in one go: its chunks, whether the end marker was among them, and the last entry's id. */
export interface LogPage {
  chunks: LogData[];
  ended: boolean;
  /** Id of the last entry read (a chunk or the end marker): where the next read starts. */
  last?: string;
}

/** At most `count` entries after `after` (exclusive; default from the start), without blocking. */
export async function readLogPage(
  redis: Redis,
  keys: Keys,
  jobId: string,
  after: string | undefined,
  count: number,
): Promise<LogPage> {
  const entries = (await redis.xrangeBuffer(
    keys.log(jobId),
    after && after !== '0-0' ? `(${after}` : '-',
    '+',
    'COUNT',
    count,
  )) as [Buffer, Buffer[]][];
  return toPage(entries);
}

/**
 * Waits up to `blockMs` for entries after `after` and returns at most `count` of them (none when
 * the wait ends empty). `blocking` must be a connection of its own.
 */
export async function readLogBlocking(
  blocking: Redis,
  keys: Keys,
  jobId: string,
  after: string,
  o: { blockMs: number; count: number },
): Promise<LogPage> {
  const reply = (await blocking.xreadBuffer(
    'COUNT',
    o.count,
    'BLOCK',
    o.blockMs,
    'STREAMS',
    keys.log(jobId),
    after,
  )) as [Buffer, [Buffer, Buffer[]][]][] | null;
  return toPage(reply?.[0]?.[1] ?? []);
}

/** The id of the newest entry of a job's log, or `0-0` when it has none. */
export async function lastLogId(redis: Redis, keys: Keys, jobId: string): Promise<string> {
  const last = (await redis.xrevrange(keys.log(jobId), '+', '-', 'COUNT', 1)) as [string, string[]][];
  return last[0]?.[0] ?? '0-0';
}

/** Orders two stream entry ids (`<ms>-<seq>`): negative when a is older. */
export function compareLogIds(a: string, b: string): number {
  const [am = 0, as = 0] = a.split('-').map(Number);
  const [bm = 0, bs = 0] = b.split('-').map(Number);
  return am === bm ? as - bs : am - bm;
}

function toPage(entries: [Buffer, Buffer[]][]): LogPage {
  const chunks: LogData[] = [];
  let ended = false;
  for (const [id, fields] of entries) {
    const field = fields[0]?.toString();
    if (field === 't') chunks.push({ id: id.toString(), data: fields[1] ?? Buffer.alloc(0) });
    else if (field === 'end') ended = true;
  }
  const last = entries.at(-1)?.[0].toString();
  return last === undefined ? { chunks, ended } : { chunks, ended, last };
}

function toChunks(entries: [string, string[]][]): { chunks: LogChunk[]; ended: boolean } {
  const chunks: LogChunk[] = [];
  let ended = false;
  for (const [id, fields] of entries) {
    if (fields[0] === 't') chunks.push({ id, text: fields[1] ?? '' });
    else if (fields[0] === 'end') ended = true;
  }
  return { chunks, ended };
}
