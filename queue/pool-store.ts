import type { Redis } from 'ioredis';
import { ARCHES, type Arch, InvalidInputError, type Keys } from '../src/core/index.ts';
import { PoolDisabledError } from './pool-disabled-error.ts';

/**
 * What a pool that nobody has configured gets: no node kept (min 0), up to 4 nodes of 2 slots,
 * enough for development on one host. A pool that was never set counts as enabled.
 */
export const POOL_DEFAULTS: Readonly<PoolSettings> = { min: 0, max: 4, slotsPerNode: 2 };

/** The largest values a pool accepts: nodes per arch (min and max), and slots per node. */
export const POOL_LIMITS = { nodes: 256, slotsPerNode: 64 } as const;

export interface PoolSettings {
  /** Nodes kept even with nothing to do. */
  min: number;
  /** Nodes the scaler never goes beyond; 0 disables the pool (jobs for its arch are refused). */
  max: number;
  /** Slots (jobs at once) of each node a provider starts. */
  slotsPerNode: number;
}

/** What the acting scaler last reported for a pool. */
export interface ScalerReport {
  /** Epoch ms of its last pass over the pool. */
  seenAt: number;
  /** How long it expects from a burst to a new node taking a job, in ms (see docs/operations.md). */
  reactionMs: number;
  /** The provider it asks: local or exec. */
  provider: string;
}

export interface Pool extends PoolSettings {
  arch: Arch;
  /** False until an operator sets the pool: the defaults apply. */
  configured: boolean;
  /** Nodes the scaler steers the pool to; absent until a scaler has run. */
  desired?: number;
  /** When an operator last changed the settings (ISO 8601). */
  updatedAt?: string;
  scaler?: ScalerReport;
}

export interface PoolStore {
  get(arch: Arch): Promise<Pool>;
  /** Every arch's pool, in ARCHES order. */
  list(): Promise<Pool[]>;
  /**
   * Changes some settings and keeps the others; refuses (InvalidInputError naming the field) a
   * value out of range or a min above the max, and changes nothing then.
   */
  set(arch: Arch, patch: Partial<PoolSettings>): Promise<Pool>;
  /** The scaler's target for the pool and its report. */
  setDesired(arch: Arch, desired: number, report: ScalerReport): Promise<void>;
  /** Throws PoolDisabledError when the pool's max is 0. */
  assertEnabled(arch: Arch): Promise<void>;
}

const num = (v: string | undefined, def: number) => {
  const n = v === undefined || v === '' ? Number.NaN : Number(v);
  return Number.isInteger(n) && n >= 0 ? n : def;
};

function fromHash(arch: Arch, h: Record<string, string>): Pool {
  const pool: Pool = {
    arch,
    configured: h.max !== undefined,
    min: num(h.min, POOL_DEFAULTS.min),
    max: num(h.max, POOL_DEFAULTS.max),
    slotsPerNode: num(h.slotsPerNode, POOL_DEFAULTS.slotsPerNode) || POOL_DEFAULTS.slotsPerNode,
  };
  if (h.desired !== undefined) pool.desired = num(h.desired, 0);
  if (h.updatedAt) pool.updatedAt = h.updatedAt;
  if (h.scalerSeenAt) {
    pool.scaler = {
      seenAt: num(h.scalerSeenAt, 0),
      reactionMs: num(h.scalerReactionMs, 0),
      provider: h.scalerProvider ?? '',
    };
  }
  return pool;
}

const FIELDS = ['min', 'max', 'slotsPerNode'] as const;

// KEYS: the pool hash. ARGV: the min, max and slotsPerNode read before ('' = unset), then the new
// min, max, slotsPerNode and updatedAt. Writes only when nothing changed in between.
const POOL_SET_LUA = `
local names = {'min', 'max', 'slotsPerNode'}
for i, f in ipairs(names) do
  if (redis.call('HGET', KEYS[1], f) or '') ~= ARGV[i] then return 0 end
end
redis.call('HSET', KEYS[1], 'min', ARGV[4], 'max', ARGV[5], 'slotsPerNode', ARGV[6], 'updatedAt', ARGV[7])
return 1
`;

/** Checks settings as a whole; the error names the field at fault (one the caller changed, where possible). */
export function validatePoolSettings(s: PoolSettings, changed: Partial<PoolSettings> = s): void {
  const range = (field: keyof PoolSettings, lo: number, hi: number) => {
    const v = s[field];
    if (!Number.isInteger(v) || v < lo || v > hi)
      throw new InvalidInputError(field, `expected an integer from ${lo} to ${hi}, got ${v}`);
  };
  range('min', 0, POOL_LIMITS.nodes);
  range('max', 0, POOL_LIMITS.nodes);
  range('slotsPerNode', 1, POOL_LIMITS.slotsPerNode);
  if (s.min > s.max) {
    const field = changed.min !== undefined ? 'min' : 'max';
    throw new InvalidInputError(field, `min (${s.min}) may not be greater than max (${s.max})`);
  }
}

/** Pool settings per arch in Redis: one hash each, written by operators (min, max, slots) and the scaler (desired). */
export function createPoolStore(redis: Redis, keys: Keys): PoolStore {
  redis.defineCommand('awPoolSet', { numberOfKeys: 1, lua: POOL_SET_LUA });
  const r = redis as Redis & { awPoolSet(...args: string[]): Promise<number> };
  const get = async (arch: Arch) => fromHash(arch, await redis.hgetall(keys.pool(arch)));
  return {
    get,
    async list() {
      const p = redis.pipeline();
      for (const arch of ARCHES) p.hgetall(keys.pool(arch));
      const res = (await p.exec()) ?? [];
      return ARCHES.map((arch, i) =>
        fromHash(arch, (res[i]?.[1] as Record<string, string> | undefined) ?? {}),
      );
    },
    async set(arch, patch) {
      const key = keys.pool(arch);
      // Compare-and-set, so two operators changing one pool at once never leave a min above the
      // max (a script rather than WATCH: the connection is shared by concurrent requests).
      for (let i = 0; i < 10; i++) {
        const raw = await redis.hmget(key, ...FIELDS);
        const cur = fromHash(
          arch,
          Object.fromEntries(FIELDS.flatMap((f, j) => (raw[j] == null ? [] : [[f, raw[j]]]))),
        );
        const next: PoolSettings = {
          min: patch.min ?? cur.min,
          max: patch.max ?? cur.max,
          slotsPerNode: patch.slotsPerNode ?? cur.slotsPerNode,
        };
        validatePoolSettings(next, patch);
        const ok = await r.awPoolSet(
          key,
          ...raw.map((v) => v ?? ''),
          String(next.min),
          String(next.max),
          String(next.slotsPerNode),
          new Date().toISOString(),
        );
        if (ok === 1) return get(arch);
      }
      throw new Error(`pool ${arch}: could not update it (too much contention)`);
    },
    async setDesired(arch, desired, report) {
      await redis.hset(keys.pool(arch), {
        desired: String(desired),
        scalerSeenAt: String(report.seenAt),
        scalerReactionMs: String(Math.round(report.reactionMs)),
        scalerProvider: report.provider,
      });
    },
    async assertEnabled(arch) {
      const max = await redis.hget(keys.pool(arch), 'max');
      if (max !== null && num(max, POOL_DEFAULTS.max) === 0) throw new PoolDisabledError(arch);
    },
  };
}
