import type { Redis } from 'ioredis';
import { ARCHES, type Arch, type Keys } from '../src/core/index.ts';

/**
 * How long a slot of a concurrency group stays held without a renewal: the attempt's consumer
 * renews it every SLOT_RENEW_MS while the job runs, so a node killed mid-job frees its slots this
 * long after its last renewal (the same bound as BullMQ's job lock).
 */
export const SLOT_LEASE_MS = 20_000;
export const SLOT_RENEW_MS = 5_000;
/**
 * A held job (over its group's cap) waits in BullMQ's delayed set: it is promoted as soon as a
 * slot of its group frees, and looks again by itself after this long (the safety net when nobody
 * is there to promote it: no API, a lost node's lease running out).
 */
export const HOLD_RECHECK_MS = 30_000;
/** A held job that has not looked again for this long (canceled, removed) no longer holds a place in line. */
export const HOLD_STALE_MS = 3 * HOLD_RECHECK_MS + 10_000;
/** The group of every repository without a cap of its own: its cap is the default. */
export const REPO_DEFAULT_GROUP = 'repo=*';
/** The label that names a job's repository (builds from a repository carry it). */
export const REPO_LABEL = 'repo';

/** The concurrency groups a job may belong to: one per label, `key=value` (only those with a cap count). */
export function candidateGroups(labels: Record<string, string>): string[] {
  return Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .sort();
}

/** A group in people's words: "repository o/r", "label team=infra". */
export function describeGroup(group: string): string {
  return group.startsWith(`${REPO_LABEL}=`)
    ? `repository ${group.slice(REPO_LABEL.length + 1)}`
    : `label ${group}`;
}

/** Why a held job waits, in the words the record and `job show` use. Pure. */
export function holdMessage(h: { group: string; running: number; cap: number; ahead: number }): string {
  const base = `${describeGroup(h.group)} has ${h.running} of ${h.cap} job${h.cap === 1 ? '' : 's'} running`;
  return h.ahead > 0 ? `${base}, ${h.ahead} waiting ahead of this one` : base;
}

// Every script's keys are the `{prefix}` hash tag's, so they run on Redis Cluster.
const NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;
// The cap of group g: its own, else the repository default for repo= groups.
const CAP = `
local function capOf(g)
  local c = redis.call('HGET', KEYS[1], g)
  if not c and string.sub(g, 1, 5) == 'repo=' then c = redis.call('HGET', KEYS[1], 'repo=*') end
  if c then return tonumber(c) end
  return nil
end
-- Drops expired slots and, from the head of the line, waiters that stopped looking (canceled, gone).
local function tidy(run, wait, keep)
  redis.call('ZREMRANGEBYSCORE', run, '-inf', now)
  while true do
    local head = redis.call('ZRANGE', wait, 0, 0)[1]
    if not head or head == keep then break end
    local seen = tonumber(redis.call('HGET', KEYS[2], head) or '0')
    if seen >= now - tonumber(ARGV[1]) then break end
    redis.call('ZREM', wait, head)
    redis.call('HDEL', KEYS[2], head)
  end
end
`;

// KEYS: limits hash, waiter-seen hash, the job's arch's held zset, job hash, groups-waiting set,
//       groups-running set, then per candidate group its running zset and waiting zset.
// ARGV: stale ms, job id, waiter member (arch/id), lease ms, then the candidate groups.
// Grants every capped group at once or none: a job over one cap holds no slot of another.
const ACQUIRE_LUA = `${NOW}${CAP}
local id, member, lease = ARGV[2], ARGV[3], tonumber(ARGV[4])
local capped, blocked = {}, nil
for i = 5, #ARGV do
  local g = ARGV[i]
  local cap = capOf(g)
  local run, wait = KEYS[7 + 2 * (i - 5)], KEYS[8 + 2 * (i - 5)]
  if cap then
    tidy(run, wait, member)
    local count = redis.call('ZCARD', run)
    local ok = redis.call('ZSCORE', run, id) ~= false
    local ahead = 0
    if not ok then
      local rank = redis.call('ZRANK', wait, member)
      ahead = rank or redis.call('ZCARD', wait)
      ok = count + ahead < cap
    end
    capped[#capped + 1] = {g, run, wait, ok}
    if not ok and not blocked then blocked = {g, count, cap, ahead} end
  else
    -- No cap (any more): nobody waits on this group.
    if redis.call('EXISTS', wait) == 1 then redis.call('DEL', wait); redis.call('SREM', KEYS[5], g) end
  end
end
if blocked then
  for _, c in ipairs(capped) do
    if not c[4] then
      redis.call('ZADD', c[3], 'NX', now, member)
      redis.call('SADD', KEYS[5], c[1])
    end
  end
  redis.call('HSET', KEYS[2], member, now)
  redis.call('ZADD', KEYS[3], now, id)
  return {0, blocked[1], blocked[2], blocked[3], blocked[4]}
end
local held = {1}
for _, c in ipairs(capped) do
  redis.call('ZADD', c[2], now + lease, id)
  redis.call('SADD', KEYS[6], c[1])
  redis.call('ZREM', c[3], member)
  if redis.call('ZCARD', c[3]) == 0 then redis.call('SREM', KEYS[5], c[1]) end
  held[#held + 1] = c[1]
end
redis.call('HDEL', KEYS[2], member)
redis.call('ZREM', KEYS[3], id)
redis.call('HDEL', KEYS[4], 'waitReason')
return held
`;

// KEYS: limits hash, waiter-seen hash, groups-waiting set, groups-running set, then per group its
//       running and waiting zsets.
// ARGV: stale ms, job id to release ('' = none), then the groups.
// Returns the waiters that now fit (at most the free slots of each group), to be promoted.
const RELEASE_LUA = `${NOW}${CAP}
local out = {}
for i = 3, #ARGV do
  local g = ARGV[i]
  local run, wait = KEYS[5 + 2 * (i - 3)], KEYS[6 + 2 * (i - 3)]
  if ARGV[2] ~= '' then redis.call('ZREM', run, ARGV[2]) end
  local cap = capOf(g)
  if cap then
    tidy(run, wait, nil)
    local free = cap - redis.call('ZCARD', run)
    if free > 0 then
      for _, m in ipairs(redis.call('ZRANGE', wait, 0, free - 1)) do out[#out + 1] = m end
    end
  else
    for _, m in ipairs(redis.call('ZRANGE', wait, 0, -1)) do out[#out + 1] = m end
    redis.call('DEL', wait)
  end
  if redis.call('EXISTS', wait) == 0 then redis.call('SREM', KEYS[3], g) end
  if redis.call('EXISTS', run) == 0 then redis.call('SREM', KEYS[4], g) end
end
return out
`;

// KEYS: per group its running zset. ARGV: lease ms, job id. A slot that ran out while Redis was
// away is taken again: the job runs, so the count says so.
const RENEW_LUA = `${NOW}
for i = 1, #KEYS do redis.call('ZADD', KEYS[i], now + tonumber(ARGV[1]), ARGV[2]) end
return #KEYS
`;

export type Acquired =
  | { granted: true; groups: string[] }
  | { granted: false; group: string; running: number; cap: number; ahead: number; message: string };

/** One group's cap and load, for the API. */
export interface GroupStatus {
  group: string;
  /** The group's own cap; undefined when it has none (a repository then has the default). */
  concurrency?: number;
  running: number;
  waiting: number;
}

/** A held job to promote: its arch and id (a waiter's member is `arch/id`). */
export interface Waiter {
  arch: Arch;
  id: string;
}

export interface ConcurrencyLimits {
  /** Takes a slot of every capped group of the job at once, or puts it in line in those that are full. */
  acquire(job: { id: string; arch: Arch; labels: Record<string, string> }): Promise<Acquired>;
  /** Keeps the job's slots held (every SLOT_RENEW_MS while it runs). */
  renew(id: string, groups: readonly string[]): Promise<void>;
  /** Frees the job's slots; returns the held jobs that now fit. */
  release(id: string, groups: readonly string[]): Promise<Waiter[]>;
  /** The held jobs that fit now in these groups (every group with waiters when omitted). */
  wake(groups?: readonly string[]): Promise<Waiter[]>;
  /** Writes why a held job waits on its record (`waitReason`; the next slot it takes clears it). */
  noteHeld(id: string, message: string): Promise<void>;
  /** Takes a job out of every line it waits in (it was canceled or removed). */
  forget(job: { id: string; arch: Arch; labels: Record<string, string> }): Promise<void>;
  /** Sets a group's cap (`null` removes it; a repository then has the default). */
  set(group: string, concurrency: number | null): Promise<void>;
  /** The default cap of every repository (`null`: none). */
  setDefault(concurrency: number | null): Promise<void>;
  getDefault(): Promise<number | undefined>;
  /** A group's cap and load. */
  status(group: string): Promise<GroupStatus>;
  /** Every group with a cap of its own, jobs running under a cap, or jobs held. */
  list(): Promise<GroupStatus[]>;
  /** Jobs of an arch held by a cap now (they wait in the queue but no slot would take them). */
  held(arch: Arch): Promise<string[]>;
}

type Scripts = Redis & {
  awLimitAcquire(n: number, ...args: (string | number)[]): Promise<(string | number)[]>;
  awLimitRelease(n: number, ...args: (string | number)[]): Promise<string[]>;
  awLimitRenew(n: number, ...args: (string | number)[]): Promise<number>;
};

function parseWaiter(m: string): Waiter | undefined {
  const slash = m.indexOf('/');
  const arch = m.slice(0, slash) as Arch;
  if (slash <= 0 || !ARCHES.includes(arch)) return undefined;
  return { arch, id: m.slice(slash + 1) };
}

/** Per-repository and per-label concurrency caps, counted in Redis (docs/architecture.md, "Concurrency caps"). */
export function createConcurrencyLimits(
  redis: Redis,
  keys: Keys,
  o: {
    /** How long a slot stays held without a renewal. Default SLOT_LEASE_MS (tests shorten it). */
    leaseMs?: number;
  } = {},
): ConcurrencyLimits {
  const leaseMs = o.leaseMs ?? SLOT_LEASE_MS;
  redis.defineCommand('awLimitAcquire', { lua: ACQUIRE_LUA });
  redis.defineCommand('awLimitRelease', { lua: RELEASE_LUA });
  redis.defineCommand('awLimitRenew', { lua: RENEW_LUA });
  const r = redis as Scripts;
  const pairs = (groups: readonly string[]) =>
    groups.flatMap((g) => [keys.limitRunning(g), keys.limitWaiting(g)]);

  async function release(id: string, groups: readonly string[]): Promise<Waiter[]> {
    if (groups.length === 0) return [];
    const out = await r.awLimitRelease(
      4 + groups.length * 2,
      keys.limits,
      keys.limitWaiterSeen,
      keys.limitGroupsWaiting,
      keys.limitGroupsRunning,
      ...pairs(groups),
      HOLD_STALE_MS,
      id,
      ...groups,
    );
    const seen = new Set<string>();
    return out
      .filter((m) => !seen.has(m) && seen.add(m))
      .map(parseWaiter)
      .filter((w): w is Waiter => w !== undefined);
  }

  async function status(group: string): Promise<GroupStatus> {
    const [cap, running, waiting] = await redis
      .multi()
      .hget(keys.limits, group)
      .zcount(keys.limitRunning(group), Date.now(), '+inf')
      .zcard(keys.limitWaiting(group))
      .exec()
      .then((res) => (res ?? []).map(([, v]) => v) as [string | null, number, number]);
    return {
      group,
      ...(cap === null ? {} : { concurrency: Number(cap) }),
      running: Number(running),
      waiting: Number(waiting),
    };
  }

  return {
    async acquire(job) {
      const groups = candidateGroups(job.labels);
      if (groups.length === 0) return { granted: true, groups: [] };
      const reply = await r.awLimitAcquire(
        6 + groups.length * 2,
        keys.limits,
        keys.limitWaiterSeen,
        keys.limitHeld(job.arch),
        keys.job(job.id),
        keys.limitGroupsWaiting,
        keys.limitGroupsRunning,
        ...pairs(groups),
        HOLD_STALE_MS,
        job.id,
        `${job.arch}/${job.id}`,
        leaseMs,
        ...groups,
      );
      if (Number(reply[0]) === 1) return { granted: true, groups: reply.slice(1).map(String) };
      const h = {
        group: String(reply[1]),
        running: Number(reply[2]),
        cap: Number(reply[3]),
        ahead: Number(reply[4]),
      };
      return { granted: false, ...h, message: holdMessage(h) };
    },
    async renew(id, groups) {
      if (groups.length === 0) return;
      await r.awLimitRenew(groups.length, ...groups.map((g) => keys.limitRunning(g)), leaseMs, id);
    },
    release,
    async wake(groups) {
      // Every group with a line, and every group with slots held (a lease that ran out frees one).
      const gs = groups ?? [
        ...new Set([
          ...(await redis.smembers(keys.limitGroupsWaiting)),
          ...(await redis.smembers(keys.limitGroupsRunning)),
        ]),
      ];
      return release('', gs);
    },
    async noteHeld(id, message) {
      await redis.hset(keys.job(id), 'waitReason', message);
    },
    async forget(job) {
      const member = `${job.arch}/${job.id}`;
      const m = redis.multi();
      for (const g of candidateGroups(job.labels)) m.zrem(keys.limitWaiting(g), member);
      await m.hdel(keys.limitWaiterSeen, member).zrem(keys.limitHeld(job.arch), job.id).exec();
    },
    async set(group, concurrency) {
      if (concurrency === null) await redis.hdel(keys.limits, group);
      else await redis.hset(keys.limits, group, concurrency);
    },
    async setDefault(concurrency) {
      if (concurrency === null) await redis.hdel(keys.limits, REPO_DEFAULT_GROUP);
      else await redis.hset(keys.limits, REPO_DEFAULT_GROUP, concurrency);
    },
    async getDefault() {
      const v = await redis.hget(keys.limits, REPO_DEFAULT_GROUP);
      return v === null ? undefined : Number(v);
    },
    status,
    async list() {
      const [own, waiting, running] = await Promise.all([
        redis.hkeys(keys.limits),
        redis.smembers(keys.limitGroupsWaiting),
        redis.smembers(keys.limitGroupsRunning),
      ]);
      const groups = [...new Set([...own, ...waiting, ...running])]
        .filter((g) => g !== REPO_DEFAULT_GROUP)
        .sort();
      const all = await Promise.all(groups.map(status));
      // A group whose last slot ran out (a dead node's) stays listed until the next pass tidies it.
      return all.filter((g) => g.concurrency !== undefined || g.running > 0 || g.waiting > 0);
    },
    async held(arch) {
      // A held job looks again every HOLD_RECHECK_MS: one not seen for longer left the line.
      await redis.zremrangebyscore(keys.limitHeld(arch), '-inf', Date.now() - HOLD_STALE_MS);
      return redis.zrange(keys.limitHeld(arch), 0, -1);
    },
  };
}
