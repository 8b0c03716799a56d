import { StringDecoder } from 'node:string_decoder';
import type { Redis } from 'ioredis';
import type { Keys } from '../src/index.ts';

/** Largest log chunk (one stream entry), in bytes. */
export const MAX_CHUNK_BYTES = 16 * 1024;
/** Longest a byte waits before it is flushed to the stream. */
export const FLUSH_MS = 50;
export const MASK = '[secure]';

export interface LogWriterOptions {
  redis: Redis;
  keys: Keys;
  jobId: string;
  /** Bytes of job output the log keeps; what comes after is dropped and `onLimit` is called once. */
  limitBytes: number;
  /** Values replaced by [secure] wherever they appear, also across chunk boundaries. */
  secrets: readonly string[];
  onLimit: () => void;
}

export interface LogWriter {
  /** Appends job output. Resolves when it may be called again (backpressure towards the job's pipe). */
  write(data: Buffer): Promise<void>;
  /** A line from archway itself (worker information, the reason a job ended); never masked or limited. */
  note(text: string): Promise<void>;
  /** Bytes of job output kept so far. */
  readonly bytes: number;
  /** Flushes what is held, writes the end marker and sets the stream's expiry. */
  end(retentionSeconds: number): Promise<void>;
}

/**
 * Turns a job's output into its log stream: UTF-8 safe chunks of at most 16 KiB, flushed when
 * full or 50 ms after their first byte, with secrets masked and the log limit enforced.
 */
export function createLogWriter(o: LogWriterOptions): LogWriter {
  const key = o.keys.log(o.jobId);
  const decoder = new StringDecoder('utf8');
  const secrets = [...new Set(o.secrets.filter((s) => s.length > 0))].sort((a, b) => b.length - a.length);
  let pending = '';
  let bytes = 0;
  let limited = false;
  let timer: NodeJS.Timeout | undefined;
  let chain: Promise<unknown> = Promise.resolve();
  let inFlight = 0;

  const mask = (text: string) => secrets.reduce((t, s) => t.split(s).join(MASK), text);

  /** Length of `text` that cannot be the start of a secret still arriving. */
  function safeLength(text: string): number {
    const longest = secrets[0]?.length ?? 0;
    for (let k = Math.min(longest - 1, text.length); k > 0; k--) {
      const tail = text.slice(text.length - k);
      if (secrets.some((s) => s.startsWith(tail))) return text.length - k;
    }
    return text.length;
  }

  function append(entries: string[]): void {
    if (entries.length === 0) return;
    const size = entries.reduce((n, e) => n + Buffer.byteLength(e), 0);
    inFlight += size;
    const multi = o.redis.multi();
    for (const e of entries) multi.xadd(key, '*', 't', e);
    chain = chain
      .then(() => multi.exec())
      .finally(() => {
        inFlight -= size;
      });
  }

  function flush(final: boolean): void {
    clearTimeout(timer);
    timer = undefined;
    if (final) pending += decoder.end();
    const masked = mask(pending);
    const cut = final ? masked.length : safeLength(masked);
    // The held-back tail may be the start of a secret: it is masked once the rest arrives.
    const out = masked.slice(0, cut);
    pending = masked.slice(cut);
    if (!out) return;
    let text = out;
    if (!limited && bytes + Buffer.byteLength(text) > o.limitBytes) {
      text = truncateUtf8(text, o.limitBytes - bytes);
      limited = true;
      queueMicrotask(o.onLimit);
    } else if (limited) {
      return;
    }
    bytes += Buffer.byteLength(text);
    append(splitUtf8(text, MAX_CHUNK_BYTES));
  }

  return {
    async write(data) {
      if (limited) return;
      pending += decoder.write(data);
      if (Buffer.byteLength(pending) >= MAX_CHUNK_BYTES) flush(false);
      else timer ??= setTimeout(() => flush(false), FLUSH_MS);
      // Hold the job's pipe while more than 1 MiB waits for Redis: memory stays bounded.
      if (inFlight > 1024 * 1024) await chain.catch(() => undefined);
    },
    async note(text) {
      flush(true);
      append(splitUtf8(text, MAX_CHUNK_BYTES));
      await chain;
    },
    get bytes() {
      return bytes;
    },
    async end(retentionSeconds) {
      flush(true);
      const multi = o.redis.multi().xadd(key, '*', 'end', '1').expire(key, retentionSeconds);
      chain = chain.then(() => multi.exec());
      await chain;
    },
  };
}

/** Splits text into pieces of at most `max` UTF-8 bytes, never inside a character. */
export function splitUtf8(text: string, max: number): string[] {
  const buf = Buffer.from(text);
  const out: string[] = [];
  let start = 0;
  while (start < buf.length) {
    let end = Math.min(start + max, buf.length);
    // Back up off continuation bytes (10xxxxxx) so the cut falls between characters.
    while (end < buf.length && end > start && ((buf[end] as number) & 0xc0) === 0x80) end--;
    out.push(buf.subarray(start, end).toString());
    start = end;
  }
  return out;
}

function truncateUtf8(text: string, maxBytes: number): string {
  if (maxBytes <= 0) return '';
  return splitUtf8(text, maxBytes)[0] ?? '';
}
