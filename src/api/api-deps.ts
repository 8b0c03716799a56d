import type { Redis } from 'ioredis';
import type { JobQueue, NodeRegistry } from '../../queue/index.ts';
import type { Keys, Logger } from '../index.ts';

/** What the API is built from: made by the composition root (`runApi`), or by a test. */
export interface ApiDeps {
  /** The API's normal (non-blocking) connection. */
  redis: Redis;
  queue: JobQueue;
  nodes: NodeRegistry;
  keys: Keys;
  /** A new connection for one log follow (it blocks in XREAD); the follow closes it when it ends. */
  createBlockingRedis: () => Redis;
  logger: Logger;
}
