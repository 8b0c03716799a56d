import type { Redis } from 'ioredis';
import type { Keys } from '../src/core/index.ts';
import { compileSecrets, createSecretMasker, MASK } from './secret-masker.ts';

export { MASK };

/** Largest log chunk (one stream entry), in bytes. */
export const MAX_CHUNK_BYTES = 16 * 1024;
/** Longest a byte waits before it is flushed to the stream. */
export const FLUSH_MS = 50;
/**
 * Most bytes of chunks in one append (one script call). Only one is in flight at a time, and what the job
 * writes meanwhile goes out together in the next one: Redis appends and fsyncs its AOF once per
 * call (with `appendfsync always`, one fsync each), so under fast output the batches grow to
 * this size instead of one round trip per 64 KiB pipe read (32 MB/s, docs/benchmarks.md).
 */
export const MAX_BATCH_BYTES = 1024 * 1024;
/** Most bytes held for Redis (waiting and in flight) before `write` holds the job's pipe. */
export const MAX_HELD_BYTES = 2 * MAX_BATCH_BYTES;

export interface LogWriterOptions {
  redis: Redis;
  keys: Keys;
  jobId: string;
  /** Bytes of job output the log keeps; what comes after is dropped and `onLimit` is called once. */
  limitBytes: number;
  /**
   * Values replaced by [secure] wherever they appear, also across chunk boundaries and when split
   * by terminal escape sequences; time linear in the output whatever their number and length.
   */
  secrets: readonly string[];
  onLimit: () => void;
  /**
   * The attempt writing (a job's run on a node). Once a later attempt has written to the log, this
   * one's writes are refused and dropped (`superseded`): a partitioned node whose job was re-run
   * elsewhere cannot add its stale output to the log when its link returns. Unset for archway's
   * own notes from outside an attempt (a cancel, a lost node), which always go in.
   */
  attempt?: number;
}

export interface LogWriter {
  /**
   * Appends job output. It is copied before this returns (the caller may reuse `data` at once);
   * resolves when it may be called again (backpressure towards the job's pipe).
   */
  write(data: Buffer): Promise<void>;
  /**
   * `write` without a promise, for a reader that reuses one buffer for every read: copies `data`
   * and returns false when the caller should wait for `ready()` before it writes more.
   */
  push(data: Buffer): boolean;
  /** Resolves once more may be written (what waits for Redis is under 2 MiB again, or an append failed). */
  ready(): Promise<void>;
  /** A line from archway itself (worker information, the reason a job ended); never masked or limited. */
  note(text: string): Promise<void>;
  /** Bytes of job output kept so far. */
  readonly bytes: number;
  /** Flushes what is held, writes the end marker and sets the stream's expiry. */
  end(retentionSeconds: number): Promise<void>;
  /** A later attempt has written to the log: this one's output is dropped from then on. */
  readonly superseded: boolean;
}

/**
 * Appends a batch of chunks (ARGV[3..]) to the log stream KEYS[1], unless KEYS[2] (the log's
 * fence) names a later attempt than ARGV[1] ('' for a note from outside an attempt: no check);
 * ARGV[2], when not '', ends the log and sets its expiry. Returns 0 when refused.
 */
const APPEND_LUA = `
local a = ARGV[1]
if a ~= '' then
  local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
  local n = tonumber(a)
  if fence > n then return 0 end
  if fence < n then redis.call('SET', KEYS[2], a) end
end
for i = 3, #ARGV do redis.call('XADD', KEYS[1], '*', 't', ARGV[i]) end
if ARGV[2] ~= '' then
  redis.call('XADD', KEYS[1], '*', 'end', '1')
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return 1`;

type AppendingRedis = Redis & {
  archwayLogAppend(log: string, fence: string, ...args: (string | Buffer)[]): Promise<number>;
};

/** The connection with the append script defined on it (once; ioredis sends it by its sha). */
function appending(redis: Redis): AppendingRedis {
  const r = redis as AppendingRedis;
  if (typeof r.archwayLogAppend !== 'function')
    redis.defineCommand('archwayLogAppend', { numberOfKeys: 2, lua: APPEND_LUA });
  return r;
}

/**
 * Bytes of one block that the job's output is copied into. Chunks are views of blocks, and a
 * block is used again once all of its chunks are in Redis: a fast job's output then costs no
 * allocation per read (tens of thousands of them for 200 MB), which had made the worker's
 * garbage collector its largest cost (docs/benchmarks.md, log throughput).
 */
const BLOCK_BYTES = 256 * 1024;
/** Free blocks a writer keeps for reuse (what waits for Redis is bounded by MAX_HELD_BYTES anyway). */
const FREE_BLOCKS = 12;

interface Block {
  buf: Buffer;
  /** Chunks of it not yet in Redis. */
  unsent: number;
  /** No more output is copied into it: free once `unsent` is 0. */
  retired: boolean;
}

/** One stream entry waiting to be sent, and the block it is a view of (none for notes and masked output). */
interface Pending {
  data: Buffer | string;
  block: Block | undefined;
}

/**
 * Turns a job's output into its log stream: UTF-8 safe chunks of at most 16 KiB, flushed when
 * full or 50 ms after their first byte, with secrets masked and the log limit enforced. Chunks
 * reach Redis in order, in appends of up to 1 MiB with one in flight at a time (a lone line goes
 * out at once; a fast job's output rides in the next append while one is in flight).
 */
export function createLogWriter(o: LogWriterOptions): LogWriter {
  const key = o.keys.log(o.jobId);
  const fence = o.keys.logFence(o.jobId);
  const redis = appending(o.redis);
  const attempt = o.attempt === undefined ? '' : String(o.attempt);
  /** A later attempt wrote to the log: nothing more goes out. */
  let superseded = false;
  // Without secrets the bytes go through untouched (the fast path: no automaton).
  const masker = o.secrets.some((s) => s.length > 0)
    ? createSecretMasker(compileSecrets(o.secrets))
    : undefined;
  /** The block output is copied into (unmasked output); its bytes [cut, fill) are not flushed yet. */
  let block: Block | undefined;
  let cut = 0;
  let fill = 0;
  const free: Block[] = [];
  /** Masked output fed since the last flush: what fills a chunk (the masker's held-back tail does not). */
  let fresh = 0;
  let bytes = 0;
  let limited = false;
  let timer: NodeJS.Timeout | undefined;
  /** Chunks flushed and not yet sent, in order; `last` is the end marker and expiry, sent after them. */
  let waiting: Pending[] = [];
  let waitingBytes = 0;
  let last: number | undefined;
  let inFlight = 0;
  /** The append in flight, if any. */
  let sending: Promise<void> | undefined;
  /** The first failed append: nothing is sent after it (its chunks would leave a gap), and note and end reject with it. */
  let failed: Error | undefined;

  const size = (e: Buffer | string) => (typeof e === 'string' ? Buffer.byteLength(e) : e.length);

  function release(b: Block): void {
    if (free.length < FREE_BLOCKS) {
      b.unsent = 0;
      b.retired = false;
      free.push(b);
    }
  }

  function enqueue(data: Buffer | string, b?: Block): void {
    waiting.push({ data, block: b });
    waitingBytes += size(data);
    if (b) b.unsent++;
  }

  /** Sends what waits, one append at a time, until nothing does. */
  function pump(): void {
    if (sending || failed || superseded || (waiting.length === 0 && last === undefined)) return;
    let n = 0;
    let sent = 0;
    while (n < waiting.length && (n === 0 || sent + size((waiting[n] as Pending).data) <= MAX_BATCH_BYTES)) {
      sent += size((waiting[n] as Pending).data);
      n++;
    }
    const batch = waiting.slice(0, n);
    waiting = n === waiting.length ? [] : waiting.slice(n);
    waitingBytes -= sent;
    let endTtl = '';
    if (waiting.length === 0 && last !== undefined) {
      endTtl = String(last);
      last = undefined;
    }
    inFlight = sent;
    sending = redis.archwayLogAppend(key, fence, attempt, endTtl, ...batch.map((p) => p.data)).then(
      (ok) => {
        inFlight = 0;
        sending = undefined;
        // Its chunks are in Redis (or refused): their blocks may be written again.
        for (const p of batch) {
          const b = p.block;
          if (b && --b.unsent === 0 && b.retired) release(b);
        }
        if (ok === 0) {
          superseded = true;
          waiting = [];
          waitingBytes = 0;
          last = undefined;
          return;
        }
        pump();
      },
      (e: unknown) => {
        failed = e instanceof Error ? e : new Error(String(e));
        inFlight = 0;
        sending = undefined;
      },
    );
  }

  /** Resolves once everything flushed so far is in Redis; rejects when an append failed. */
  async function sent(): Promise<void> {
    while (sending) await sending;
    if (failed) throw failed;
  }

  /** Keeps `out` under the log limit (calling onLimit once it is reached); what may go. */
  function limit(out: Buffer): Buffer {
    if (bytes + out.length <= o.limitBytes) {
      bytes += out.length;
      return out;
    }
    const kept = out.subarray(0, utf8Boundary(out.subarray(0, Math.max(0, o.limitBytes - bytes))));
    limited = true;
    queueMicrotask(o.onLimit);
    bytes += kept.length;
    return kept;
  }

  /**
   * Flushes the block's unflushed bytes: all of them when `final`, else up to a point that
   * splits no character; with `whole`, only whole chunks of 16 KiB (the rest waits for more
   * output or the timer), so that a fast job's log is as few entries as it can be.
   */
  function flushBlock(final: boolean, whole: boolean): void {
    if (!block || limited) return;
    const buf = block.buf;
    let end = final ? fill : cut + utf8Boundary(buf.subarray(cut, fill));
    if (whole) {
      end = cut + Math.floor((end - cut) / MAX_CHUNK_BYTES) * MAX_CHUNK_BYTES;
      // Never inside a character (`end` is short of `fill`, so the byte there is the job's).
      if (end > cut && end < fill) end = charBoundary(buf, cut, end);
    }
    if (end <= cut) return;
    const out = limit(buf.subarray(cut, end));
    for (const c of splitUtf8Buffer(out, MAX_CHUNK_BYTES)) enqueue(c, block);
    cut = end;
  }

  /** Flushes everything held that may leave now (the timer, a note, the end). */
  function flush(final: boolean): void {
    clearTimeout(timer);
    timer = undefined;
    fresh = 0;
    if (limited) return;
    if (masker) {
      const out = masker.take(final);
      if (out.length > 0) for (const c of splitUtf8Buffer(limit(out), MAX_CHUNK_BYTES)) enqueue(c);
    } else flushBlock(final, false);
    pump();
  }

  /** A block to copy output into, with the unflushed tail of the current one (at most a character) moved to its start. */
  function nextBlock(): void {
    const next = free.pop() ?? { buf: Buffer.allocUnsafeSlow(BLOCK_BYTES), unsent: 0, retired: false };
    const carried = block ? block.buf.copy(next.buf, 0, cut, fill) : 0;
    if (block) {
      block.retired = true;
      if (block.unsent === 0) release(block);
    }
    block = next;
    cut = 0;
    fill = carried;
  }

  /** Copies unmasked output into blocks, flushing each whole 16 KiB as it fills. */
  function copyIn(data: Buffer): void {
    let off = 0;
    while (off < data.length) {
      if (!block || fill === block.buf.length) {
        // Full: what it holds goes out (a character cut by its end moves on with the rest).
        flushBlock(false, false);
        nextBlock();
      }
      const b = block as Block;
      const n = data.copy(b.buf, fill, off);
      fill += n;
      off += n;
      if (fill - cut >= MAX_CHUNK_BYTES) flushBlock(false, true);
    }
  }

  function held(): boolean {
    return !!sending && !failed && waitingBytes + inFlight > MAX_HELD_BYTES;
  }

  function push(data: Buffer): boolean {
    // After a failed append nothing more is sent (note and end reject): what the job writes is
    // dropped rather than held, so a Redis outage does not fill the worker's memory.
    if (limited || superseded || failed || data.length === 0) return true;
    if (masker) {
      // The masker keeps what it is given until it can leave: its own copy.
      masker.write(Buffer.from(data));
      fresh += data.length;
      if (fresh >= MAX_CHUNK_BYTES) flush(false);
    } else copyIn(data);
    pump();
    if (!limited && (masker ? masker.held > 0 : !!block && fill > cut))
      timer ??= setTimeout(() => flush(false), FLUSH_MS);
    // Hold the job's pipe while more than 2 MiB waits for Redis: memory stays bounded.
    return !held();
  }

  async function ready(): Promise<void> {
    while (held()) await sending;
  }

  return {
    push,
    ready,
    async write(data) {
      if (!push(data)) await ready();
    },
    async note(t) {
      flush(true);
      for (const piece of splitUtf8(t, MAX_CHUNK_BYTES)) enqueue(piece);
      pump();
      await sent();
    },
    get bytes() {
      return bytes;
    },
    get superseded() {
      return superseded;
    },
    async end(retentionSeconds) {
      flush(true);
      last = retentionSeconds;
      pump();
      await sent();
    },
  };
}

/** Length of `buf` without a trailing, incomplete UTF-8 sequence. */
function utf8Boundary(buf: Buffer): number {
  // Look back at most 3 bytes for the lead byte of the last sequence.
  for (let i = buf.length - 1, seen = 1; i >= 0 && seen <= 4; i--, seen++) {
    const b = buf[i] as number;
    if ((b & 0xc0) === 0x80) continue; // continuation byte
    const need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
    return need > seen ? i : buf.length;
  }
  return buf.length;
}

/**
 * Where a piece of `buf` that may end at `end` (after `start`) should end so that it cuts no UTF-8
 * character: before the lead byte of the character that `end` falls in, at most 3 bytes back (a
 * character is at most 4 bytes). Bytes with no lead byte that close are not UTF-8 (a job printing
 * binary): they are cut at `end`, as a search back to `start` would make an empty piece for ever.
 */
function charBoundary(buf: Uint8Array, start: number, end: number): number {
  for (let b = end; b > start && end - b <= 3; b--)
    if (b >= buf.length || ((buf[b] as number) & 0xc0) !== 0x80) return b;
  return end;
}

/** Splits bytes into pieces of at most `max`, never inside a UTF-8 character. */
function splitUtf8Buffer(buf: Buffer, max: number): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  while (start < buf.length) {
    const end = charBoundary(buf, start, Math.min(start + max, buf.length));
    out.push(buf.subarray(start, end));
    start = end;
  }
  return out;
}

/** Splits text into pieces of at most `max` UTF-8 bytes, never inside a character. */
export function splitUtf8(text: string, max: number): string[] {
  return splitUtf8Buffer(Buffer.from(text), max).map((b) => b.toString());
}

/**
 * Appends one line of archway's own to a job's log from outside its attempt (a cancel before it
 * started, a lost node); with `endRetentionSeconds` it also closes the log.
 */
export async function appendLogNote(
  redis: Redis,
  keys: Keys,
  jobId: string,
  text: string,
  endRetentionSeconds?: number,
): Promise<void> {
  const log = createLogWriter({ redis, keys, jobId, limitBytes: 0, secrets: [], onLimit: () => {} });
  await log.note(text);
  if (endRetentionSeconds !== undefined) await log.end(endRetentionSeconds);
}
