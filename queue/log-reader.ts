import type { Redis } from 'ioredis';
import type { Keys } from '../src/index.ts';

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

export interface FollowOptions {
  after?: string | undefined;
  signal: AbortSignal;
  /** Asked when nothing arrives for a while: true when the job has finished (so the log will not grow). */
  isFinished: () => Promise<boolean>;
}

/**
 * Yields a job's log as it is written, until its end marker (or, for a job that ended without
 * one, until it is finished and nothing more arrives). `blocking` must be a connection of its own.
 */
export async function* followLog(
  blocking: Redis,
  keys: Keys,
  jobId: string,
  o: FollowOptions,
): AsyncGenerator<LogChunk> {
  const key = keys.log(jobId);
  let last = o.after ?? '0-0';
  while (!o.signal.aborted) {
    const reply = (await blocking.xread('COUNT', 500, 'BLOCK', 1000, 'STREAMS', key, last)) as
      | [string, [string, string[]][]][]
      | null;
    const entries = reply?.[0]?.[1] ?? [];
    if (entries.length === 0) {
      if (await o.isFinished()) {
        // One last look: the end marker may have landed between the read and the check.
        const rest = await readLog(blocking, keys, jobId, last === '0-0' ? undefined : last);
        for (const c of rest.chunks) yield c;
        return;
      }
      continue;
    }
    const { chunks, ended } = toChunks(entries);
    for (const c of chunks) yield c;
    if (ended) return;
    last = entries.at(-1)?.[0] ?? last;
  }
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
