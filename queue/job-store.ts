import type { Redis } from 'ioredis';
import { z } from 'zod';
import {
  type Arch,
  type Attempt,
  FINAL_STATES,
  InvalidInputError,
  JOB_STATES,
  JobRecord,
  type JobSpec,
  type JobState,
  type Keys,
  TRANSITIONS,
} from '../src/core/index.ts';
import { MASK } from './log-writer.ts';

/** Length the events stream is trimmed to (approximately). */
const EVENTS_MAXLEN = 100_000;

// KEYS: job hash, events stream, one sorted set per state in JOB_STATES order, then the expiry set.
// ARGV: id, to, allowed-from (comma list), expected attempt ('' = any), take a new attempt ('1'/'0'),
//       fields to set (JSON object; JSON null deletes), now (ms), events maxlen, retention (ms).
const TRANSITION_LUA = `
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {'missing', ''} end
local allowed = false
for s in string.gmatch(ARGV[3], '[^,]+') do if s == cur then allowed = true end end
if not allowed then return {'conflict', cur} end
local attempt = redis.call('HGET', KEYS[1], 'attempt') or '0'
if ARGV[4] ~= '' and attempt ~= ARGV[4] then return {'stale', cur, attempt} end
if ARGV[5] == '1' then attempt = tostring(redis.call('HINCRBY', KEYS[1], 'attempt', 1)) end
local fields = cjson.decode(ARGV[6])
for k, v in pairs(fields) do
  if v == cjson.null then redis.call('HDEL', KEYS[1], k) else redis.call('HSET', KEYS[1], k, tostring(v)) end
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'updatedAt', ARGV[7])
local states = {'queued', 'running', 'passed', 'failed', 'errored', 'canceled'}
local score = redis.call('HGET', KEYS[1], 'createdMs') or ARGV[7]
for i, s in ipairs(states) do
  if s == cur then redis.call('ZREM', KEYS[2 + i], ARGV[1]) end
  if s == ARGV[2] then redis.call('ZADD', KEYS[2 + i], score, ARGV[1]) end
end
if ARGV[2] == 'passed' or ARGV[2] == 'failed' or ARGV[2] == 'errored' or ARGV[2] == 'canceled' then
  -- Final: no attempt needs the secrets any more, and the record expires with its log.
  redis.call('HDEL', KEYS[1], 'secrets')
  redis.call('ZADD', KEYS[#KEYS], tonumber(ARGV[7]) + tonumber(ARGV[9]), ARGV[1])
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'job', ARGV[1], 'from', cur, 'to', ARGV[2], 'attempt', attempt,
  'reason', fields['reason'] ~= nil and fields['reason'] ~= cjson.null and fields['reason'] or '')
return {'ok', cur, attempt}
`;

// KEYS: job hash, events, all-jobs set, state:queued set, arch set, then label sets.
// ARGV: id, createdMs, fields (flat JSON array k,v,...), events maxlen.
const CREATE_LUA = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local f = cjson.decode(ARGV[3])
redis.call('HSET', KEYS[1], unpack(f))
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[1])
for i = 6, #KEYS do redis.call('ZADD', KEYS[i], ARGV[2], ARGV[1]) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'job', ARGV[1], 'from', '', 'to', 'queued', 'attempt', '0', 'reason', '')
return 1
`;

export type TransitionResult =
  | { ok: true; from: JobState; attempt: number }
  | { ok: false; why: 'missing' | 'conflict' | 'stale'; state?: JobState; attempt?: number };

/** A job's attempts with `attempt` in its place (replacing the one of the same number), in order. */
export function withAttempt(list: readonly Attempt[], attempt: Attempt): Attempt[] {
  return [...list.filter((a) => a.n !== attempt.n), attempt].sort((a, b) => a.n - b.n);
}

export interface TransitionOptions {
  /** Only when the job's attempt is this one: a lost attempt can never finish a job twice. */
  attempt?: number;
  /** Start a new attempt (the attempt counter goes up by one). */
  newAttempt?: boolean;
  /** Narrows the states the job may be in (within what the state machine allows). */
  onlyFrom?: readonly JobState[];
  /** Fields to set; `null` removes one. */
  fields?: Record<string, string | number | null>;
}

/** Why a job is canceled: by a user, or by a newer build of the same branch or pull request. */
export type CancelReason = 'canceled' | 'superseded';

/** Whether a job's cancel flag is set, and why (the worker that runs it stops it with that reason). */
export type CancelState = { requested: false } | { requested: true; reason: CancelReason };

export interface ListFilter {
  state?: JobState;
  arch?: string;
  /** `key=value` */
  label?: string;
  /** Newest first; `before` is a createdMs cursor from the previous page. */
  before?: number;
  limit: number;
}

export interface JobStore {
  create(
    id: string,
    spec: JobSpec,
    extra: { warnings: string[]; specHash: string; restartOf?: string | undefined },
  ): Promise<boolean>;
  get(id: string): Promise<JobRecord | undefined>;
  /** The raw hash field (for fields outside the record, such as specHash). */
  field(id: string, name: string): Promise<string | null>;
  /**
   * Records that `by` is the new run of the job `id` (a restart): set once, the first restart
   * wins. Returns the job's new run as recorded (`by`, or the one recorded before it).
   */
  markRestarted(id: string, by: string): Promise<string>;
  transition(id: string, to: JobState, opts?: TransitionOptions): Promise<TransitionResult>;
  recordAttempt(id: string, attempt: Attempt): Promise<void>;
  /** Sets the durable cancel flag (and its reason, read by the job's worker) and tells the workers. */
  requestCancel(id: string, reason?: CancelReason): Promise<void>;
  /** The durable cancel flag and its reason: what the job's worker polls (pub/sub can lose a message). */
  cancelState(id: string): Promise<CancelState>;
  list(filter: ListFilter): Promise<{ jobs: JobRecord[]; next?: number }>;
  /**
   * Removes the finished jobs whose retention has passed (at most `limit`): their records and
   * every index entry (all, state, arch, labels). Returns their ids. Their logs expire by themselves.
   */
  sweepExpired(now?: number, limit?: number): Promise<string[]>;
  /**
   * Gives the finished jobs that have no expiry yet (finished before records expired) their
   * expiry, from their end, and drops the secrets from their stored spec. Returns how many.
   */
  backfillRetention(): Promise<number>;
}

export interface JobStoreOptions {
  /** How long a finished job's record is kept (as its log is), in seconds. */
  retentionSeconds: number;
}

export function createJobStore(redis: Redis, keys: Keys, so: JobStoreOptions): JobStore {
  redis.defineCommand('awTransition', { numberOfKeys: 3 + JOB_STATES.length, lua: TRANSITION_LUA });
  redis.defineCommand('awCreate', { lua: CREATE_LUA });
  const r = redis as Redis & {
    awTransition(...args: (string | number)[]): Promise<string[]>;
    awCreate(numKeys: number, ...args: (string | number)[]): Promise<number>;
  };

  async function get(id: string): Promise<JobRecord | undefined> {
    const h = await redis.hgetall(keys.job(id));
    if (!h.state) return undefined;
    // The secrets live beside the spec until the job is final (then only their names are left).
    const spec = JSON.parse(h.spec ?? '{}') as Record<string, unknown>;
    if (h.secrets) spec.secrets = JSON.parse(h.secrets);
    const parsed = JobRecord.safeParse({
      id,
      arch: h.arch,
      image: h.image,
      state: h.state,
      reason: h.reason || undefined,
      exitCode: h.exitCode ? Number(h.exitCode) : undefined,
      spec,
      labels: JSON.parse(h.labels ?? '{}'),
      createdAt: h.createdAt,
      startedAt: h.startedAt || undefined,
      finishedAt: h.finishedAt || undefined,
      node: h.node || undefined,
      attempt: Number(h.attempt ?? 0),
      attempts: JSON.parse(h.attempts ?? '[]'),
      cancelRequested: h.cancelRequested === '1',
      warnings: JSON.parse(h.warnings ?? '[]'),
      logBytes: Number(h.logBytes ?? 0),
      imageDigest: h.imageDigest || undefined,
      restartOf: h.restartOf || undefined,
      restartedBy: h.restartedBy || undefined,
      effectiveLimits: h.effectiveLimits ? JSON.parse(h.effectiveLimits) : undefined,
      // Set while a cap holds the job; only a queued job waits.
      waitReason: h.state === 'queued' ? h.waitReason || undefined : undefined,
    });
    // Read back through zod (a trust boundary): a record that does not parse is reported, not half-used.
    if (!parsed.success)
      throw new Error(`job ${id}: stored record is invalid: ${parsed.error.issues[0]?.message}`);
    return parsed.data;
  }

  return {
    async create(id, spec, extra) {
      const now = Date.now();
      const names = Object.fromEntries(Object.keys(spec.secrets).map((k) => [k, MASK]));
      const fields = {
        state: 'queued',
        arch: spec.arch,
        image: spec.image,
        // Secret values in a field of their own, deleted when the job is final: never in clear text after it.
        spec: JSON.stringify({ ...spec, secrets: names }),
        ...(Object.keys(names).length > 0 ? { secrets: JSON.stringify(spec.secrets) } : {}),
        labels: JSON.stringify(spec.labels),
        createdAt: new Date(now).toISOString(),
        createdMs: String(now),
        attempt: '0',
        attempts: '[]',
        warnings: JSON.stringify(extra.warnings),
        specHash: extra.specHash,
        logBytes: '0',
        ...(extra.restartOf ? { restartOf: extra.restartOf } : {}),
      };
      const labelKeys = Object.entries(spec.labels).map(([k, v]) => keys.jobsByLabel(k, v));
      const created = await r.awCreate(
        5 + labelKeys.length,
        keys.job(id),
        keys.events,
        keys.jobsAll,
        keys.jobsByState('queued'),
        keys.jobsByArch(spec.arch),
        ...labelKeys,
        id,
        now,
        JSON.stringify(Object.entries(fields).flat()),
        EVENTS_MAXLEN,
      );
      return created === 1;
    },
    get,
    field: (id, name) => redis.hget(keys.job(id), name),
    async markRestarted(id, by) {
      // Never on a record already swept: that would leave a hash without a job.
      const was = (await redis.eval(
        "if redis.call('EXISTS', KEYS[1]) == 0 then return false end redis.call('HSETNX', KEYS[1], 'restartedBy', ARGV[1]) return redis.call('HGET', KEYS[1], 'restartedBy')",
        1,
        keys.job(id),
        by,
      )) as string | null;
      return was ?? by;
    },
    async transition(id, to, opts = {}) {
      const from = (Object.keys(TRANSITIONS) as JobState[]).filter(
        (s) => TRANSITIONS[s].includes(to) && (!opts.onlyFrom || opts.onlyFrom.includes(s)),
      );
      const reply = await r.awTransition(
        keys.job(id),
        keys.events,
        ...keys.allStateKeys(),
        keys.jobsExpiry,
        id,
        to,
        from.join(','),
        opts.attempt === undefined ? '' : String(opts.attempt),
        opts.newAttempt ? '1' : '0',
        JSON.stringify(opts.fields ?? {}),
        Date.now(),
        EVENTS_MAXLEN,
        Math.round(so.retentionSeconds * 1000),
      );
      const [status, state, attempt] = reply;
      if (status === 'ok') return { ok: true, from: state as JobState, attempt: Number(attempt) };
      return {
        ok: false,
        why: status as 'missing' | 'conflict' | 'stale',
        ...(state ? { state: state as JobState } : {}),
        ...(attempt ? { attempt: Number(attempt) } : {}),
      };
    },
    async recordAttempt(id, attempt) {
      // Attempts are written by the attempt's own worker only, so read-modify-write is safe under WATCH.
      const key = keys.job(id);
      for (let i = 0; i < 5; i++) {
        await redis.watch(key);
        const list = JSON.parse((await redis.hget(key, 'attempts')) ?? '[]') as Attempt[];
        const next = withAttempt(list, attempt);
        const ok = await redis.multi().hset(key, 'attempts', JSON.stringify(next)).exec();
        if (ok) return;
      }
      throw new Error(`job ${id}: could not record attempt ${attempt.n} (too much contention)`);
    },
    async requestCancel(id, reason = 'canceled') {
      await redis.hset(keys.job(id), 'cancelRequested', '1', 'cancelReason', reason);
      await redis.publish(keys.cancelChannel, id);
    },
    async cancelState(id) {
      const [flag, why] = await redis.hmget(keys.job(id), 'cancelRequested', 'cancelReason');
      if (flag !== '1') return { requested: false };
      return { requested: true, reason: why === 'superseded' ? 'superseded' : 'canceled' };
    },
    async sweepExpired(now = Date.now(), limit = 500) {
      const ids = await redis.zrangebyscore(keys.jobsExpiry, '-inf', now, 'LIMIT', 0, limit);
      for (const id of ids) {
        // A final job no longer changes: what its record says is what its index entries are.
        const [arch, labels] = await redis.hmget(keys.job(id), 'arch', 'labels');
        const parsed = LabelsField.safeParse(JSON.parse(labels ?? '{}'));
        const m = redis.multi().del(keys.job(id)).zrem(keys.jobsAll, id);
        for (const s of JOB_STATES) m.zrem(keys.jobsByState(s), id);
        if (arch) m.zrem(keys.jobsByArch(arch as Arch), id);
        for (const [k, v] of Object.entries(parsed.success ? parsed.data : {}))
          m.zrem(keys.jobsByLabel(k, v), id);
        m.zrem(keys.jobsExpiry, id);
        await m.exec();
      }
      return ids;
    },
    async backfillRetention() {
      let adopted = 0;
      for (const state of FINAL_STATES) {
        for (let start = 0; ; start += 500) {
          const ids = await redis.zrange(keys.jobsByState(state), start, start + 499);
          if (ids.length === 0) break;
          const scores = (await redis.call('ZMSCORE', keys.jobsExpiry, ...ids)) as (string | null)[];
          for (const [i, id] of ids.entries()) {
            if (scores[i] !== null) continue;
            const [finishedAt, spec] = await redis.hmget(keys.job(id), 'finishedAt', 'spec');
            const parsed = JSON.parse(spec ?? '{}') as { secrets?: Record<string, string> };
            const names = Object.fromEntries(Object.keys(parsed.secrets ?? {}).map((k) => [k, MASK]));
            const end = Date.parse(finishedAt ?? '') || Date.now();
            await redis
              .multi()
              .hset(keys.job(id), 'spec', JSON.stringify({ ...parsed, secrets: names }))
              .hdel(keys.job(id), 'secrets')
              .zadd(keys.jobsExpiry, end + Math.round(so.retentionSeconds * 1000), id)
              .exec();
            adopted++;
          }
        }
      }
      return adopted;
    },
    async list(filter) {
      const sets: string[] = [keys.jobsAll];
      if (filter.state) sets.push(keys.jobsByState(filter.state));
      if (filter.arch) sets.push(keys.jobsByArch(filter.arch as never));
      if (filter.label) {
        const eq = filter.label.indexOf('=');
        if (eq <= 0) throw new InvalidInputError('label', `expected key=value, got '${filter.label}'`);
        sets.push(keys.jobsByLabel(filter.label.slice(0, eq), filter.label.slice(eq + 1)));
      }
      const max = filter.before === undefined ? '+inf' : `(${filter.before}`;
      let ids: string[];
      let scores: number[];
      if (sets.length === 1) {
        const rev = await redis.zrevrangebyscore(
          keys.jobsAll,
          max,
          '-inf',
          'WITHSCORES',
          'LIMIT',
          0,
          filter.limit + 1,
        );
        ({ ids, scores } = unzip(chunkPairs(rev)));
      } else {
        const raw = (await redis.call(
          'ZINTER',
          sets.length,
          ...sets,
          'AGGREGATE',
          'MAX',
          'WITHSCORES',
        )) as string[];
        const all = chunkPairs(raw)
          .filter(([, s]) => filter.before === undefined || Number(s) < filter.before)
          .sort((a, b) => Number(b[1]) - Number(a[1]))
          .slice(0, filter.limit + 1);
        ({ ids, scores } = unzip(all));
      }
      const page = ids.slice(0, filter.limit);
      const jobs = (await Promise.all(page.map((id) => get(id)))).filter(
        (j): j is JobRecord => j !== undefined,
      );
      const more = ids.length > filter.limit;
      return more ? { jobs, next: scores[filter.limit - 1] as number } : { jobs };
    },
  };
}

const LabelsField = z.record(z.string(), z.string());

function chunkPairs(flat: string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i] as string, flat[i + 1] as string]);
  return out;
}

function unzip(pairs: [string, string][]): { ids: string[]; scores: number[] } {
  return { ids: pairs.map((p) => p[0]), scores: pairs.map((p) => Number(p[1])) };
}
