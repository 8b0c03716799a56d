import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { Keys } from '../src/core/index.ts';

/**
 * A job's short-lived source credential: a token bound to one git host, with what it is renewed
 * from. Written by the GitHub App, read by the job's worker (which sends it to `host` only).
 */
export const SourceCredential = z.object({
  /** The git host (`host[:port]`) the token may be sent to. */
  host: z.string().min(1),
  token: z.string().min(1),
  /** The GitHub App installation and repository the token was made for (renewal makes a new one). */
  installationId: z.number(),
  repositoryId: z.number(),
  /** When the first token for the job was stored (ms): renewal stops a day after. */
  since: z.number(),
});
export type SourceCredential = z.infer<typeof SourceCredential>;

export interface SourceCredentials {
  /** Stores one credential for each job, expiring after `ttlMs` (and listed for renewal at that time). */
  put(jobIds: readonly string[], credential: SourceCredential, ttlMs: number): Promise<void>;
  /** A job's credential; `undefined` when it has none, it expired, or the stored value does not parse. */
  get(jobId: string): Promise<SourceCredential | undefined>;
  drop(jobIds: readonly string[]): Promise<void>;
  /** Jobs whose credential expires before `ms` (at most `limit`), soonest first. */
  expiringBefore(ms: number, limit: number): Promise<string[]>;
}

/** The source credentials of jobs in Redis (`keys.sourceCredential`, `keys.sourceCredentials`). */
export function createSourceCredentials(redis: Redis, keys: Keys): SourceCredentials {
  return {
    async put(jobIds, credential, ttlMs) {
      if (jobIds.length === 0) return;
      const value = JSON.stringify(SourceCredential.parse(credential));
      const ttl = Math.max(1, Math.round(ttlMs));
      const m = redis.multi();
      for (const id of jobIds) {
        m.set(keys.sourceCredential(id), value, 'PX', ttl);
        m.zadd(keys.sourceCredentials, Date.now() + ttl, id);
      }
      await m.exec();
    },
    async get(jobId) {
      const raw = await redis.get(keys.sourceCredential(jobId));
      if (!raw) return undefined;
      try {
        const parsed = SourceCredential.safeParse(JSON.parse(raw));
        return parsed.success ? parsed.data : undefined;
      } catch {
        return undefined;
      }
    },
    async drop(jobIds) {
      if (jobIds.length === 0) return;
      await redis
        .multi()
        .del(...jobIds.map((id) => keys.sourceCredential(id)))
        .zrem(keys.sourceCredentials, ...jobIds)
        .exec();
    },
    expiringBefore: (ms, limit) => redis.zrangebyscore(keys.sourceCredentials, '-inf', ms, 'LIMIT', 0, limit),
  };
}
