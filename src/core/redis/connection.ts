import { Cluster, Redis } from 'ioredis';
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

/** Where a REDIS_URL points: one server, or the primary that Redis Sentinel names. */
export type RedisTarget =
  | { kind: 'server'; url: string }
  | {
      kind: 'cluster';
      /** Some of the cluster's primaries; the client learns the others from them. */
      nodes: { host: string; port: number }[];
      username?: string;
      password?: string;
      tls: boolean;
    }
  | {
      kind: 'sentinel';
      sentinels: { host: string; port: number }[];
      /** The primary's name in the sentinels' `sentinel monitor NAME ...`. */
      primary: string;
      username?: string;
      password?: string;
      tls: boolean;
    };

const SENTINEL_URL = /^(rediss?)\+sentinel:\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^/]+)\/([^/?#]+)\/?$/;
const CLUSTER_URL = /^(rediss?)\+cluster:\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^/]+)\/?$/;

function hostPorts(list: string, what: string): { host: string; port: number }[] {
  return list.split(',').map((h) => {
    const hp = h.match(/^\[?([^\]]+?)\]?:(\d+)$/);
    if (!hp) throw new Error(`${what} address '${h}' is not host:port`);
    return { host: hp[1] ?? '', port: Number(hp[2]) };
  });
}

/**
 * Reads a REDIS_URL: `redis://` or `rediss://` (one server),
 * `redis+cluster://[user][:password@]host:port[,host:port...]` (`rediss+cluster://` for TLS): a
 * Redis Cluster, from some of its primaries; or
 * `redis+sentinel://[user][:password@]host:port[,host:port...]/NAME` (`rediss+sentinel://` for
 * TLS): the primary named NAME, found through those sentinels; the password is the data nodes'
 * (and the sentinels', when they ask for one). Throws on a malformed sentinel URL.
 */
export function parseRedisUrl(url: string): RedisTarget {
  if (url.includes('+cluster://')) {
    const c = url.match(CLUSTER_URL);
    const [, scheme, user, pass, hosts] = c ?? [];
    if (!c || !hosts)
      throw new Error('a Cluster URL is redis+cluster://[:password@]host:port[,host:port...]');
    return {
      kind: 'cluster',
      nodes: hostPorts(hosts, 'cluster node'),
      ...(user ? { username: decodeURIComponent(user) } : {}),
      ...(pass ? { password: decodeURIComponent(pass) } : {}),
      tls: scheme === 'rediss',
    };
  }
  if (!url.includes('+sentinel://')) return { kind: 'server', url };
  const m = url.match(SENTINEL_URL);
  const [, scheme, user, pass, hosts, primary] = m ?? [];
  if (!m || !hosts || !primary)
    throw new Error('a Sentinel URL is redis+sentinel://[:password@]host:port[,host:port...]/primary-name');
  const sentinels = hostPorts(hosts, 'sentinel');
  return {
    kind: 'sentinel',
    sentinels,
    primary: decodeURIComponent(primary),
    ...(user ? { username: decodeURIComponent(user) } : {}),
    ...(pass ? { password: decodeURIComponent(pass) } : {}),
    tls: scheme === 'rediss',
  };
}

/**
 * An ioredis connection that reconnects by itself, with backoff capped at 2 s. Through Sentinel
 * it asks the sentinels for the primary at every (re)connect and follows a failover: on the
 * sentinels' `+switch-master`, and on a READONLY reply (it reached a server that became a replica).
 */
export function createRedis(o: RedisOptions): Redis {
  const common = {
    connectionName: o.name,
    maxRetriesPerRequest: o.blocking ? null : 3,
    enableReadyCheck: true,
    retryStrategy: (times: number) => Math.min(50 * 2 ** times, 2000),
    lazyConnect: false,
  };
  const target = parseRedisUrl(o.url);
  if (target.kind === 'server') return new Redis(o.url, common);
  if (target.kind === 'cluster') {
    const cluster = new Cluster(target.nodes, {
      enableReadyCheck: true,
      lazyConnect: false,
      maxRedirections: 16,
      clusterRetryStrategy: common.retryStrategy,
      redisOptions: {
        connectionName: o.name,
        maxRetriesPerRequest: common.maxRetriesPerRequest,
        ...(target.username ? { username: target.username } : {}),
        ...(target.password ? { password: target.password } : {}),
        ...(target.tls ? { tls: {} } : {}),
      },
    });
    // archway's code is written against the Redis client's API; a Cluster client has the same
    // commands (each key routed to its slot). BullMQ tells the two apart by itself.
    return cluster as unknown as Redis;
  }
  return new Redis({
    ...common,
    sentinels: target.sentinels,
    name: target.primary,
    ...(target.username ? { username: target.username, sentinelUsername: target.username } : {}),
    ...(target.password ? { password: target.password, sentinelPassword: target.password } : {}),
    ...(target.tls ? { tls: {}, sentinelTLS: {}, enableTLSForSentinelMode: true } : {}),
    failoverDetector: true,
    sentinelRetryStrategy: (times: number) => Math.min(100 * times, 2000),
    reconnectOnError: (err: Error) => (err.message.startsWith('READONLY') ? 2 : false),
  });
}

/**
 * Refuses a Redis that may evict keys: an evicted job record or queue entry is a lost job.
 * Managed Redis that hides CONFIG must be set to noeviction by its operator.
 */
export async function assertNoEviction(redis: Redis): Promise<void> {
  // On a Cluster, CONFIG goes to one node of its choosing: ask every node, a shard that evicts loses jobs too.
  const cluster = redis as unknown as { isCluster?: boolean; nodes?: () => Redis[] };
  const servers = cluster.isCluster && cluster.nodes ? cluster.nodes() : [redis];
  const policies = await Promise.all(
    servers.map(async (s) => {
      const reply = (await s.config('GET', 'maxmemory-policy').catch(() => null)) as string[] | null;
      return reply?.[1];
    }),
  );
  const policy = policies.find((p) => p !== undefined && p !== 'noeviction');
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
