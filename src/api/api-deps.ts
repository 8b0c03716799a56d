import type { FastifyPluginAsync } from 'fastify';
import type { Redis } from 'ioredis';
import type { JobQueue, NodeRegistry } from '../../queue/index.ts';
import type { Keys, Logger, SourceUrlPolicy } from '../core/index.ts';
import type { ApiBuilds } from './builds/api-builds.ts';
import type { Uploads } from './builds/uploads.ts';

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
  /** Whether jobs may ask for `network: egress` (ARCHWAY_EGRESS). Default true. */
  egress?: boolean;
  /** Builds (`/v1/builds`, `/v1/uploads`, the uploads' git endpoint); the routes are left out without it. */
  builds?: { builds: ApiBuilds; uploads: Uploads; publicUrl: () => string };
}
