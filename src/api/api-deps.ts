import type { FastifyPluginAsync } from 'fastify';
import type { Redis } from 'ioredis';
import type { JobQueue, NodeRegistry } from '../../queue/index.ts';
import type { Keys, Logger, SourceUrlPolicy } from '../core/index.ts';
import type { PageLinks } from './pages/index.ts';

/** What the API is built from: made by the composition root (`runApi`), or by a test. */
export interface ApiDeps {
  /** The API's normal (non-blocking) connection. */
  redis: Redis;
  queue: JobQueue;
  nodes: NodeRegistry;
  keys: Keys;
  /** A new connection for the log reader of one followed job (it blocks in XREAD), shared by its followers; closed when the last leaves. */
  createBlockingRedis: () => Redis;
  logger: Logger;
  /** The GitHub App's route (`POST /webhooks/github`), registered when the App is configured. */
  webhookRoutes?: FastifyPluginAsync;
  /** Which `source.git` URLs a submitted job may use. Default: remote https and git URLs only. */
  sourcePolicy?: SourceUrlPolicy;
  /** Signs the pages' links (what check runs link to). Default: made from the config (ARCHWAY_PAGE_SECRET, ARCHWAY_PUBLIC_URL). */
  pageLinks?: PageLinks;
  /** Whether jobs may ask for `network: egress` (ARCHWAY_EGRESS). Default true. */
  egress?: boolean;
}
