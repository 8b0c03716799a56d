import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';

// KEYS: the lease. ARGV: owner, ttl ms. Takes a free lease or renews our own, in one step.
const TAKE_LUA = `
local v = redis.call('GET', KEYS[1])
if v == false then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
`;
// KEYS: the lease. ARGV: owner. Releases it only while it is still ours (it may have expired and been taken).
const RELEASE_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

export interface LeaseOptions {
  /** Who holds the lease (an instance id). Default: a random id, new for each lease. */
  owner?: string;
}

/**
 * A lease on one Redis key: held by one owner at a time, for `ttlMs` after it was last taken or
 * renewed, so a holder that dies frees it by itself.
 */
export interface Lease {
  readonly key: string;
  readonly owner: string;
  /** Takes the lease when it is free, or renews it when this owner holds it (atomic). True when held. */
  take(): Promise<boolean>;
  /** Gives the lease up, only if this owner still holds it. Never throws (an expired lease is already free). */
  release(): Promise<void>;
}

type LeaseRedis = Redis & {
  awLeaseTake(key: string, owner: string, ttlMs: number): Promise<number>;
  awLeaseRelease(key: string, owner: string): Promise<number>;
};

/** A lease on `key` for `ttlMs` (see Lease). Takes nothing until `take()`. */
export function createLease(redis: Redis, key: string, ttlMs: number, o: LeaseOptions = {}): Lease {
  const r = redis as LeaseRedis;
  if (typeof r.awLeaseTake !== 'function') {
    redis.defineCommand('awLeaseTake', { numberOfKeys: 1, lua: TAKE_LUA });
    redis.defineCommand('awLeaseRelease', { numberOfKeys: 1, lua: RELEASE_LUA });
  }
  const owner = o.owner ?? randomBytes(8).toString('hex');
  return {
    key,
    owner,
    async take() {
      return (await r.awLeaseTake(key, owner, Math.round(ttlMs))) === 1;
    },
    async release() {
      await r.awLeaseRelease(key, owner).catch(() => undefined);
    },
  };
}
