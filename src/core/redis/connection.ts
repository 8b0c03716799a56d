import { Redis } from 'ioredis';
import { ArchwayError } from '../errors/archway-error.ts';
import type { Logger } from '../logger.ts';

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

/** The URL with any password hidden, for messages and logs. */
export function safeRedisUrl(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, '//[secure]@');
}

export interface ConnectRedisOptions {
  url: string;
  /** CLIENT SETNAME of the connection. */
  name: string;
  /** Where connection errors go (at warn) while the connection lives. */
  logger: Pick<Logger, 'warn'>;
  /** Longest the first PING may wait. Default 10 s. */
  timeoutMs?: number;
}

/**
 * A process's main Redis connection, checked before the process starts anything on it: Redis
 * answers (else REDIS_UNREACHABLE naming the URL, without its password, and the fix) and does
 * not evict keys (assertNoEviction). The start-up preamble of the API and the scaler.
 */
export async function connectRedis(o: ConnectRedisOptions): Promise<Redis> {
  const redis = createRedis({ url: o.url, name: o.name });
  let lastError: NodeJS.ErrnoException | undefined;
  redis.on('error', (e: NodeJS.ErrnoException) => {
    lastError = e;
    o.logger.warn({ err: e.message }, 'redis connection error');
  });
  try {
    const timeoutMs = o.timeoutMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      redis.ping(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ])
      .catch((e: unknown) => {
        // The socket's own error (ECONNREFUSED, ENOTFOUND) says more than the command's.
        const why = lastError?.code ?? lastError?.message ?? (e instanceof Error ? e.message : String(e));
        throw new ArchwayError(
          'REDIS_UNREACHABLE',
          `cannot reach Redis at ${safeRedisUrl(o.url)}: ${why} (start it, or set REDIS_URL to one that runs)`,
          { httpStatus: 503, infra: true, cause: e },
        );
      })
      .finally(() => clearTimeout(timer));
    await assertNoEviction(redis);
  } catch (e) {
    redis.disconnect();
    throw e;
  }
  return redis;
}
