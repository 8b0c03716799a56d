import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { createJobQueue, createNodeRegistry, type JobQueue, type NodeRegistry } from '../../queue/index.ts';
import { type ApiApp, type ApiDeps, buildApp, createApiStores } from '../../src/api/index.ts';
import {
  ApiConfig,
  createKeys,
  createLogger,
  createRedis,
  type Keys,
  parseConfig,
} from '../../src/core/index.ts';
import { startRedis, type TestRedis } from './redis-server.ts';

export interface TestApiOptions {
  /** Names the key prefix and the logger. */
  name: string;
  /** API settings over the ones filled in here (REDIS_URL, ARCHWAY_REDIS_PREFIX, ARCHWAY_TOKEN). */
  env?: Record<string, string>;
  /** A Redis to share (a test cluster's); it is not closed with the API. Default: a redis-server of its own. */
  redis?: { url: string; client: Redis; keys: Keys };
  /** Retention of finished jobs in the API's queue. Default 60 s. */
  logRetentionSeconds?: number;
  /** How long the API reuses an arch's median run time (default 5 s); 0 for a test that finishes jobs and reads the estimate at once. */
  medianCacheMs?: number;
  /** Sees each connection the API opens for a log follow (to check that it is closed). */
  onBlockingRedis?: (r: Redis) => void;
  /** The API's app is listening on the loopback when true; `url` is its address. Default false (inject only). */
  listen?: boolean;
}

/** An API built by `buildApp` the way the API's main builds it, on a real Redis. */
export interface TestApi {
  app: ApiApp;
  /** Its admin token (`env.ARCHWAY_TOKEN` when given). */
  token: string;
  /** The app's address when it listens; '' otherwise. */
  url: string;
  /** Its Redis: the server (undefined when shared), connection and key prefix. */
  server: TestRedis | undefined;
  redisUrl: string;
  redis: Redis;
  keys: Keys;
  queue: JobQueue;
  nodes: NodeRegistry;
  /** What the app was built from: for another app on the same Redis with other settings. */
  deps: ApiDeps;
  /** The settings the app was parsed from (before `env`'s own). */
  env: Record<string, string>;
  /** Closes the app, its queue, and the Redis it started. Idempotent. */
  close(): Promise<void>;
}

/** The API test setup: a Redis (its own or shared), a key prefix of the test's own, and the app. */
export async function startTestApi(o: TestApiOptions): Promise<TestApi> {
  const server = o.redis ? undefined : await startRedis();
  const redisUrl = o.redis?.url ?? (server as TestRedis).url;
  // Through createRedis, as the API connects (the suite's cluster mode too).
  const redis = o.redis?.client ?? createRedis({ url: redisUrl, name: 'test-api' });
  const keys = o.redis?.keys ?? createKeys(`${o.name}${randomBytes(3).toString('hex')}`);
  const queue = createJobQueue({ redis, keys, logRetentionSeconds: o.logRetentionSeconds ?? 60 });
  const nodes = createNodeRegistry(redis, keys);
  const token = o.env?.ARCHWAY_TOKEN ?? `admin-${randomBytes(12).toString('hex')}`;
  const env = { REDIS_URL: redisUrl, ARCHWAY_REDIS_PREFIX: keys.prefix, ARCHWAY_TOKEN: token };
  const deps: ApiDeps = {
    redis,
    queue,
    nodes,
    ...createApiStores({
      redis,
      keys,
      queue,
      nodes,
      ...(o.medianCacheMs === undefined ? {} : { medianCacheMs: o.medianCacheMs }),
    }),
    keys,
    logger: createLogger({ name: `${o.name}-test`, level: 'silent' }),
    createBlockingRedis: () => {
      const r = createRedis({ url: redisUrl, name: 'test-api-follow', blocking: true });
      o.onBlockingRedis?.(r);
      return r;
    },
  };
  const app = buildApp(parseConfig(ApiConfig, { ...env, ...o.env }), deps);
  let url = '';
  if (o.listen) url = await app.listen({ host: '127.0.0.1', port: 0 });
  else await app.ready();
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      // Order: the app (its follows end), the queue, then the connection and server it rests on.
      await app.close().catch(() => undefined);
      await queue.close().catch(() => undefined);
      if (!o.redis) redis.disconnect();
      await server?.stop();
    })();
    return closing;
  };
  return { app, token, url, server, redisUrl, redis, keys, queue, nodes, deps, env, close };
}
