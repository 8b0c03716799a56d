import { Redis } from 'ioredis';
import { ArchwayError } from '../errors/archway-error.ts';

export interface RedisOptions {
  url: string;
  /** CLIENT SETNAME, so `CLIENT LIST` tells archway's connections apart. */
  name: string;
  /**
   * BullMQ's blocking connections need `maxRetriesPerRequest: null` (retry for ever); commands
   * on the others fail after a few retries so a request does not hang while Redis is away.
   */
  blocking?: boolean;
}

/** An ioredis connection that reconnects by itself, with backoff capped at 2 s. */
export function createRedis(o: RedisOptions): Redis {
  return new Redis(o.url, {
    connectionName: o.name,
    maxRetriesPerRequest: o.blocking ? null : 3,
    enableReadyCheck: true,
    retryStrategy: (times) => Math.min(50 * 2 ** times, 2000),
    lazyConnect: false,
  });
}

/**
 * Refuses a Redis that may evict keys: an evicted job record or queue entry is a lost job.
 * Managed Redis that hides CONFIG must be set to noeviction by its operator.
 */
export async function assertNoEviction(redis: Redis): Promise<void> {
  const reply = (await redis.config('GET', 'maxmemory-policy').catch(() => null)) as string[] | null;
  const policy = reply?.[1];
  if (policy !== undefined && policy !== 'noeviction') {
    throw new ArchwayError(
      'REDIS_EVICTION_POLICY',
      `Redis maxmemory-policy is '${policy}', archway needs 'noeviction' (an evicted key is a lost job): run CONFIG SET maxmemory-policy noeviction, and set it in redis.conf`,
      { httpStatus: 503, infra: true },
    );
  }
}
