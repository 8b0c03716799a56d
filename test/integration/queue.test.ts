import { randomBytes } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createJobConsumer,
  createJobEvents,
  createJobQueue,
  createLease,
  createLogWriter,
  type JobQueue,
  type LogWriterOptions,
  lastLogId,
  readLog,
  readLogBlocking,
} from '../../queue/index.ts';
import {
  assertNoEviction,
  createKeys,
  createLogger,
  createRedis,
  type JobRecord,
  JobSpec,
  type Keys,
} from '../../src/core/index.ts';
import { logTail } from '../../webhooks/index.ts';
import { configSetAll, startRedis, type TestRedis } from '../support/redis-server.ts';
import { eventually } from '../support/test-host.ts';

let server: TestRedis;
let redis: Redis;
let keys: Keys;
let queue: JobQueue;
const spec = (over: Record<string, unknown> = {}) =>
  JobSpec.parse({ arch: 'x86_64', image: 'busybox', script: 'true', ...over });

beforeAll(async () => {
  server = await startRedis();
  // Through createRedis, as archway connects: the suite's cluster mode (ARCHWAY_TEST_REDIS=cluster) works too.
  redis = createRedis({ url: server.url, name: 'test' });
  keys = createKeys(`t${randomBytes(3).toString('hex')}`);
  queue = createJobQueue({ redis, keys, logRetentionSeconds: 60 });
});
afterAll(async () => {
  await queue.close();
  redis.disconnect();
  await server.stop();
});

describe('job queue', () => {
  it.runIf(process.env.ARCHWAY_TEST_REDIS === 'cluster')(
    "runs on a 3-primary Redis Cluster (the suite's cluster mode)",
    async () => {
      await redis.ping();
      const cluster = redis as unknown as Cluster;
      expect(cluster.isCluster).toBe(true);
      expect(cluster.nodes('master')).toHaveLength(3);
    },
  );

  it('submits a job: record queued, BullMQ job with the same id, arch alias normalised', async () => {
    const { job, created } = await queue.submit(spec({ labels: { repo: 'a/b' } }), { clientId: 'c' });
    expect(created).toBe(true);
    expect(job).toMatchObject({ state: 'queued', arch: 'amd64', attempt: 0, labels: { repo: 'a/b' } });
    expect(await queue.depth('amd64')).toBeGreaterThanOrEqual(1);
    expect(await redis.exists(`${keys.bullPrefix}:${keys.queueName('amd64')}:${job.id}`)).toBe(1);
  });

  it('is idempotent on the Idempotency-Key, and refuses the key with another request', async () => {
    const a = await queue.submit(spec(), { clientId: 'c', idempotencyKey: 'k1' });
    const b = await queue.submit(spec(), { clientId: 'c', idempotencyKey: 'k1' });
    expect(b.created).toBe(false);
    expect(b.job.id).toBe(a.job.id);
    const other = await queue.submit(spec(), { clientId: 'other', idempotencyKey: 'k1' });
    expect(other.job.id).not.toBe(a.job.id);
    await expect(
      queue.submit(spec({ script: 'false' }), { clientId: 'c', idempotencyKey: 'k1' }),
    ).rejects.toThrow(/different request/);
  });

  it('checks every transition against the state machine and the attempt', async () => {
    const { job } = await queue.submit(spec(), { clientId: 'c' });
    expect(await queue.store.transition(job.id, 'passed')).toMatchObject({
      ok: false,
      why: 'conflict',
      state: 'queued',
    });
    const run = await queue.store.transition(job.id, 'running', { newAttempt: true });
    expect(run).toEqual({ ok: true, from: 'queued', attempt: 1 });
    // A second attempt takes over (the first was lost) ...
    expect(await queue.store.transition(job.id, 'running', { newAttempt: true, attempt: 1 })).toMatchObject({
      ok: true,
      attempt: 2,
    });
    // ... and the lost first attempt can no longer finish the job.
    expect(await queue.store.transition(job.id, 'passed', { attempt: 1 })).toMatchObject({
      ok: false,
      why: 'stale',
    });
    expect(
      await queue.store.transition(job.id, 'failed', { attempt: 2, fields: { exitCode: 3 } }),
    ).toMatchObject({ ok: true });
    expect(await queue.store.transition(job.id, 'passed', { attempt: 2 })).toMatchObject({
      ok: false,
      why: 'conflict',
    });
    expect((await queue.get(job.id))?.exitCode).toBe(3);
    const events = await redis.xrange(keys.events, '-', '+');
    const mine = events.filter(([, f]) => f[1] === job.id).map(([, f]) => `${f[3]}->${f[5]}`);
    expect(mine).toEqual(['->queued', 'queued->running', 'running->running', 'running->failed']);
  });

  it('cancels a queued job at once, removing it from BullMQ; a finished one is refused', async () => {
    const { job } = await queue.submit(spec(), { clientId: 'c' });
    const canceled = await queue.cancel(job.id);
    expect(canceled).toMatchObject({ state: 'canceled', reason: 'canceled' });
    expect(await redis.exists(`${keys.bullPrefix}:${keys.queueName('amd64')}:${job.id}`)).toBe(0);
    await expect(queue.cancel(job.id)).rejects.toThrow(/already finished/);
    await expect(queue.cancel('nosuch')).rejects.toThrow(/no job 'nosuch'/);
  });

  it('a running job gets the durable flag and a message on the cancel channel', async () => {
    const { job } = await queue.submit(spec(), { clientId: 'c' });
    await queue.store.transition(job.id, 'running', { newAttempt: true });
    const sub = redis.duplicate();
    const got = new Promise<string>((resolve) => sub.on('message', (_c, m) => resolve(m)));
    await sub.subscribe(keys.cancelChannel);
    await queue.cancel(job.id);
    expect(await got).toBe(job.id);
    expect((await queue.get(job.id))?.cancelRequested).toBe(true);
    sub.disconnect();
  });

  it('lists newest first, filtered by state, arch and label, in pages', async () => {
    const k = createKeys(`l${randomBytes(3).toString('hex')}`);
    const q = createJobQueue({ redis, keys: k, logRetentionSeconds: 60 });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push(
        (
          await q.submit(spec({ arch: i % 2 ? 'arm64' : 'amd64', labels: { n: String(i % 2) } }), {
            clientId: 'c',
          })
        ).job.id,
      );
      await new Promise((r) => setTimeout(r, 3));
    }
    const page1 = await q.list({ limit: 2 });
    expect(page1.jobs.map((j) => j.id)).toEqual([ids[4], ids[3]]);
    const page2 = await q.list({ limit: 2, ...(page1.next ? { before: page1.next } : {}) });
    expect(page2.jobs.map((j) => j.id)).toEqual([ids[2], ids[1]]);
    expect((await q.list({ limit: 10, arch: 'arm64' })).jobs.map((j) => j.id)).toEqual([ids[3], ids[1]]);
    expect((await q.list({ limit: 10, label: 'n=0', state: 'queued' })).jobs).toHaveLength(3);
    await q.close();
  });

  it('says where a queued job stands: by priority then arrival; a retry in back-off is in no line until its delay ends (issue #13)', async () => {
    const k = createKeys(`p${randomBytes(3).toString('hex')}`);
    const q = createJobQueue({ redis, keys: k, logRetentionSeconds: 60 });
    const add = async (priority: number) => (await q.submit(spec({ priority }), { clientId: 'c' })).job;
    const first = await add(5);
    const second = await add(5);
    const urgent = await add(1);
    const late = await add(9);
    const place = (j: JobRecord) => q.place(j);
    expect(await place(urgent)).toEqual({ status: 'waiting', position: 1, of: 4 });
    expect(await place(first)).toEqual({ status: 'waiting', position: 2, of: 4 });
    expect(await place(second)).toEqual({ status: 'waiting', position: 3, of: 4 });
    expect(await place(late)).toEqual({ status: 'waiting', position: 4, of: 4 });
    // Another arch's line is its own.
    const arm = (await q.submit(spec({ arch: 'arm64' }), { clientId: 'c' })).job;
    expect(await place(arm)).toEqual({ status: 'waiting', position: 1, of: 1 });

    // A real consumer takes the first in line; its host fails it, and it goes back in back-off for 60 s.
    let release: () => void = () => undefined;
    const held = new Promise<void>((r) => {
      release = r;
    });
    const taken: string[] = [];
    const consumer = createJobConsumer(
      {
        arch: 'amd64',
        slots: 1,
        nodeId: 'test-node',
        queue: q,
        keys: k,
        connection: createRedis({ url: server.url, name: 'test-consumer', blocking: true }),
        logger: createLogger({ name: 'test', level: 'silent' }),
      },
      async (job) => {
        taken.push(job.id);
        if (taken.length === 1)
          return { state: 'errored', error: 'host fault', retryDelayMs: 60_000, logBytes: 0 };
        await held;
        return { state: 'passed', exitCode: 0, logBytes: 0 };
      },
    );
    const t0 = Date.now();
    await consumer.start();
    try {
      // The retried one is delayed; the next in line runs; the rest moved up.
      await eventually(async () => taken.length === 2, 'the consumer to take two jobs', 10_000);
      expect(taken).toEqual([urgent.id, first.id]);
      const retried = await place(urgent);
      expect(retried).toMatchObject({ status: 'delayed', of: 2 });
      const until = retried?.status === 'delayed' ? retried.until : 0;
      expect(until).toBeGreaterThanOrEqual(t0 + 60_000);
      expect(until).toBeLessThan(Date.now() + 61_000);
      expect((await q.get(urgent.id))?.state).toBe('queued');
      expect(await place(second)).toEqual({ status: 'waiting', position: 1, of: 2 });
      expect(await place(late)).toEqual({ status: 'waiting', position: 2, of: 2 });
      // Running, or canceled: in no line.
      expect(await place(first)).toBeUndefined();
      await q.cancel(second.id);
      expect(await place(second)).toBeUndefined();
      expect(await place(late)).toEqual({ status: 'waiting', position: 1, of: 1 });
    } finally {
      release();
      for (const j of [urgent, second, late]) await q.cancel(j.id).catch(() => undefined);
      await consumer.close();
      await q.close();
    }
  });

  it('refuses a Redis that may evict keys, naming the policy', async () => {
    await configSetAll(redis, 'maxmemory-policy', 'allkeys-lru');
    await expect(assertNoEviction(redis)).rejects.toThrow(
      /maxmemory-policy is 'allkeys-lru', archway needs 'noeviction'/,
    );
    await configSetAll(redis, 'maxmemory-policy', 'noeviction');
    await expect(assertNoEviction(redis)).resolves.toBeUndefined();
  });
});

/** A log writer of job `jobId` on this suite's Redis: 64 MB of log, no secrets, unless `o` says otherwise. */
const logWriter = (jobId: string, o: Partial<Omit<LogWriterOptions, 'redis' | 'keys' | 'jobId'>> = {}) =>
  createLogWriter({ redis, keys, jobId, limitBytes: 64e6, secrets: [], onLimit: () => {}, ...o });

describe('log writer', () => {
  const logOf = async (id: string) => (await readLog(redis, keys, id)).chunks.map((c) => c.text).join('');

  it('masks a secret split across two writes and never splits a UTF-8 character', async () => {
    const w = logWriter('mask', { limitBytes: 1e6, secrets: ['hunter2-very-secret'] });
    await w.write(Buffer.from('password is hunter2-ve'));
    await new Promise((r) => setTimeout(r, 120)); // a flush happens in between
    await w.write(Buffer.from('ry-secret!\n'));
    const euro = Buffer.from('€');
    await w.write(euro.subarray(0, 1));
    await w.write(euro.subarray(1));
    await w.end(60);
    const text = await logOf('mask');
    expect(text).toBe('password is [secure]!\n€');
    expect(text).not.toContain('hunter');
  });

  it('masks a secret split by a colour code, in the log and in the check run text (stripped, then masked)', async () => {
    const w = logWriter('ansi', { limitBytes: 1e6, secrets: ['abcd1234efgh5678'] });
    await w.write(Buffer.from('a=abcd1234\x1b[0mefgh5678.\n'));
    await w.write(Buffer.from('b=\x1b[31mabcd'));
    await new Promise((r) => setTimeout(r, 120)); // a flush happens in between
    await w.write(Buffer.from('1234\x1b[1;33mefgh5678\x1b[0m.\n'));
    await w.end(60);
    const text = await logOf('ansi');
    expect(text).toBe('a=[secure].\nb=\x1b[31m[secure]\x1b[0m.\n');
    const tail = await logTail(redis, keys, 'ansi', 10_000);
    expect(tail).toBe('a=[secure].\nb=[secure].\n');
    // A log written unmasked (before this writer) is still masked after its colour codes are removed.
    const raw = logWriter('raw', { limitBytes: 1e6 });
    await raw.write(Buffer.from('k=abcd\x1b[0m1234efgh5678\n'));
    await raw.end(60);
    expect(await logTail(redis, keys, 'raw', 10_000, ['abcd1234efgh5678'])).toBe('k=[secure]\n');
  });

  it("refuses an attempt's output once a later attempt has written (a partitioned node's stale output)", async () => {
    const writer = (attempt?: number) =>
      logWriter('fenced', { limitBytes: 1e6, ...(attempt !== undefined ? { attempt } : {}) });
    const first = writer(1);
    await first.note('attempt 1 starts\n');
    // The node is cut off; the job is re-run elsewhere as attempt 2.
    const second = writer(2);
    await second.note('attempt 2 starts\n');
    // A follower waits in XREAD for what comes next: it must never see the refused output either.
    const followerConn = redis.duplicate();
    const seen: string[] = [];
    const following = (async () => {
      let position = await lastLogId(redis, keys, 'fenced');
      while (!seen.join('').includes('attempt 2 output')) {
        const page = await readLogBlocking(followerConn, keys, 'fenced', position, {
          blockMs: 5000,
          count: 100,
        });
        for (const c of page.chunks) seen.push(c.data.toString());
        position = page.last ?? position;
      }
    })();
    await new Promise((r) => setTimeout(r, 50));
    // The link returns: attempt 1's buffered output and its end are refused.
    await first.write(Buffer.from('stale output\n'));
    await first.end(60);
    expect(first.superseded).toBe(true);
    await first.write(Buffer.from('more stale output\n'));
    // archway's own notes (a cancel, a lost node) go in whatever the attempt.
    await writer().note('[archway] a note\n');
    await second.write(Buffer.from('attempt 2 output\n'));
    expect(second.superseded).toBe(false);
    await second.end(60);
    const { chunks, ended } = await readLog(redis, keys, 'fenced');
    expect(chunks.map((c) => c.text).join('')).toBe(
      'attempt 1 starts\nattempt 2 starts\n[archway] a note\nattempt 2 output\n',
    );
    await following;
    followerConn.disconnect();
    expect(seen.join('')).toBe('[archway] a note\nattempt 2 output\n');
    expect(ended).toBe(true);
    expect(await redis.ttl(keys.logFence('fenced'))).toBeGreaterThan(0);
  });

  it('cuts chunks at 16 KiB on character boundaries and stops at the log limit', async () => {
    let limited = 0;
    const w = logWriter('big', { limitBytes: 40_000, onLimit: () => limited++ });
    await w.write(Buffer.from('é'.repeat(30_000))); // 60,000 bytes
    await w.write(Buffer.from('more'));
    await w.end(60);
    const { chunks, ended } = await readLog(redis, keys, 'big');
    expect(ended).toBe(true);
    expect(limited).toBe(1);
    for (const c of chunks) expect(Buffer.byteLength(c.text)).toBeLessThanOrEqual(16 * 1024);
    const text = chunks.map((c) => c.text).join('');
    expect(Buffer.byteLength(text)).toBe(40_000);
    expect(text).toBe('é'.repeat(20_000));
    expect(await redis.ttl(keys.log('big'))).toBeGreaterThan(0);
  });
});

describe('log writer under fast output', () => {
  const servers = () => {
    const cluster = redis as unknown as { isCluster?: boolean; nodes?: (role: 'master') => Redis[] };
    return cluster.isCluster && cluster.nodes ? cluster.nodes('master') : [redis];
  };
  /** Appends Redis has run, whichever form they take (EXEC, EVAL, EVALSHA: INFO commandstats, summed over the cluster's primaries). */
  const appends = async () => {
    let n = 0;
    for (const s of servers()) {
      const stats = await s.info('commandstats');
      for (const cmd of ['exec', 'eval', 'evalsha'])
        n += Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
    }
    return n;
  };

  it('sends what the job writes while an append is in flight in the next one, in order, and holds the job past 2 MiB waiting', async () => {
    const w = logWriter('fast');
    // 8 MiB in 64 KiB pipe reads, as fast as the writer takes them: one append per read would be
    // 128; in appends of at most 1 MiB, at least 8.
    const pieces = Array.from({ length: 128 }, (_, i) =>
      Buffer.from(`${String(i).padStart(4, '0')}`.repeat(16384)),
    );
    const before = await appends();
    for (const p of pieces) await w.write(p);
    await w.end(60);
    const made = (await appends()) - before;
    expect(made).toBeGreaterThanOrEqual(8);
    expect(made).toBeLessThanOrEqual(24);
    const { chunks, ended } = await readLog(redis, keys, 'fast');
    expect(ended).toBe(true);
    expect(chunks.map((c) => c.text).join('')).toBe(Buffer.concat(pieces).toString());
    for (const c of chunks) expect(Buffer.byteLength(c.text)).toBeLessThanOrEqual(16 * 1024);

    // Redis paused: the writer takes at most about 2 MiB waiting (+ the append in flight), then holds the job's pipe.
    const slow = logWriter('paused');
    await Promise.all(servers().map((s) => s.call('CLIENT', 'PAUSE', '1500', 'WRITE')));
    let taken = 0;
    const writing = (async () => {
      for (const p of pieces) {
        await slow.write(p);
        taken++;
      }
    })();
    await new Promise((r) => setTimeout(r, 1000));
    expect(taken).toBeGreaterThan(16);
    expect(taken).toBeLessThanOrEqual(50); // (2 MiB waiting + 1 MiB in flight) / 64 KiB + 1
    await writing;
    await slow.end(60);
    expect(Buffer.byteLength((await readLog(redis, keys, 'paused')).chunks.map((c) => c.text).join(''))).toBe(
      8 * 1024 * 1024,
    );
  });

  it('cuts a fast log of 3-byte characters into whole 16 KiB-at-most entries that each decode alone', async () => {
    const w = logWriter('euros');
    // 16,384 is no multiple of 3: an entry cut at exactly 16 KiB would end inside a character.
    const all = Buffer.from('€'.repeat(400_000));
    for (let at = 0; at < all.length; at += 4700) if (!w.push(all.subarray(at, at + 4700))) await w.ready();
    await w.end(60);
    const { chunks } = await readLog(redis, keys, 'euros');
    for (const c of chunks) {
      expect(c.text).not.toContain('\ufffd');
      expect(Buffer.byteLength(c.text)).toBeLessThanOrEqual(16 * 1024);
    }
    expect(chunks.map((c) => c.text).join('')).toBe(all.toString());
  });

  it('takes a fast log of bytes that are not UTF-8 (all continuation bytes) whole, cut at 16 KiB', async () => {
    const w = logWriter('binary');
    // A job that prints binary: no character boundary anywhere to back off to. Cutting used to look
    // for one back to the chunk's start, and there it made an empty chunk, again and again: the
    // worker's event loop spun for ever (a node lost to one job's output, then the next node).
    const read = Buffer.alloc(64 * 1024, 0x80);
    for (let i = 0; i < 16; i++) if (!w.push(read)) await w.ready();
    await w.end(60);
    const entries = (await redis.xrangeBuffer(keys.log('binary'), '-', '+')) as [Buffer, Buffer[]][];
    const data = entries.filter(([, f]) => f[0]?.toString() === 't').map(([, f]) => f[1] as Buffer);
    expect(data.reduce((n, d) => n + d.length, 0)).toBe(16 * 64 * 1024);
    for (const d of data) {
      expect(d.length).toBeGreaterThan(0);
      expect(d.length).toBeLessThanOrEqual(16 * 1024);
      expect(d.every((b) => b === 0x80)).toBe(true);
    }
  });

  it('after a failed append drops what the job writes (holding it would fill memory while Redis refuses) and reports the failure', async () => {
    const w = logWriter('refused');
    // The log's key holds a string: Redis refuses every append (WRONGTYPE).
    await redis.set(keys.log('refused'), 'not a stream');
    await w.write(Buffer.from('first line\n'));
    await expect(w.note('[archway] a note\n')).rejects.toThrow(/WRONGTYPE/);
    const kept = w.bytes;
    const read = Buffer.alloc(64 * 1024, 'x');
    for (let i = 0; i < 64; i++) expect(w.push(read)).toBe(true);
    expect(w.bytes).toBe(kept);
    await expect(w.end(60)).rejects.toThrow(/WRONGTYPE/);
    await redis.del(keys.log('refused'));
  });

  it('copies each write (a reader may reuse its buffer) and makes a fast log of whole 16 KiB entries', async () => {
    const w = logWriter('reused');
    // 4 MiB in reads of 4,700 bytes (what a pipe read of `yes | head` gives), all through one buffer.
    const read = Buffer.alloc(4700);
    const expected: Buffer[] = [];
    for (let i = 0; expected.length * 4700 < 4 * 1024 * 1024; i++) {
      read.fill(String.fromCharCode(97 + (i % 26)));
      expected.push(Buffer.from(read));
      if (!w.push(read)) await w.ready();
    }
    await w.end(60);
    const { chunks } = await readLog(redis, keys, 'reused');
    const all = Buffer.concat(expected);
    expect(chunks.map((c) => c.text).join('')).toBe(all.toString());
    // As few entries as 16 KiB allows (a 50 ms flush may cut one short now and then); 4,700-byte
    // writes flushed whole came out as 16 KiB + the rest, about twice as many.
    expect(chunks.length).toBeLessThanOrEqual(Math.ceil((Math.ceil(all.length / 16384) * 11) / 10));
  });
});

describe('lease', () => {
  it('is held by one owner at a time, renewed by its holder, released only by it, free after its ttl', async () => {
    const key = `${keys.prefix}:lease-test`;
    const a = createLease(redis, key, 300, { owner: 'a' });
    const b = createLease(redis, key, 300, { owner: 'b' });
    expect(await a.take()).toBe(true);
    expect(await b.take()).toBe(false);
    expect(await a.take()).toBe(true);
    expect(await redis.pttl(key)).toBeGreaterThan(200);
    await b.release();
    expect(await redis.get(key)).toBe('a');
    await a.release();
    expect(await redis.exists(key)).toBe(0);
    expect(await b.take()).toBe(true);
    await new Promise((r) => setTimeout(r, 400));
    // b's lease ran out: a takes it, and b's late release leaves a's alone.
    expect(await a.take()).toBe(true);
    await b.release();
    expect(await redis.get(key)).toBe('a');
    await a.release();
    const random = [createLease(redis, key, 1000), createLease(redis, key, 1000)];
    expect(random[0]?.owner).not.toBe(random[1]?.owner);
  });
});

describe('job events', () => {
  it('reads typed transitions after a position that starts at the end of the stream and is kept', async () => {
    const events = createJobEvents(redis, keys);
    const before = await queue.submit(spec(), { clientId: 'c' });
    const position = events.position(`${keys.prefix}:events-position-test`);
    const start = await position.get();
    expect(start).toBe(await events.lastEventId());
    const { job } = await queue.submit(spec(), { clientId: 'c' });
    await queue.store.transition(job.id, 'running', { newAttempt: true });
    await queue.store.transition(job.id, 'failed', { attempt: 1, fields: { reason: 'timeout' } });
    const conn = redis.duplicate();
    try {
      const read = await events.readEvents(conn, start, 100);
      const mine = read.events.filter((e) => e.job === job.id);
      expect(read.events.some((e) => e.job === before.job.id)).toBe(false);
      expect(mine.map((e) => [e.from, e.to, e.attempt, e.reason])).toEqual([
        [undefined, 'queued', 0, undefined],
        ['queued', 'running', 1, undefined],
        ['running', 'failed', 1, 'timeout'],
      ]);
      expect(mine[0]?.at).toBeGreaterThan(Date.now() - 60_000);
      await position.set(read.lastId);
      expect(await events.position(`${keys.prefix}:events-position-test`).get()).toBe(read.lastId);
      // Nothing after the last one: an empty read keeps the position.
      expect(await events.readEvents(conn, read.lastId, 10)).toEqual({ events: [], lastId: read.lastId });
    } finally {
      conn.disconnect();
    }
  });
});
