import type { FastifyPluginAsync } from 'fastify';
import type { Redis } from 'ioredis';
import {
  createImageCatalog,
  createPoolStatus,
  createPoolStore,
  type ImageCatalog,
  type JobQueue,
  type NodeRegistry,
  type PoolStatusReader,
  type PoolStore,
} from '../../queue/index.ts';
import type { Keys, Logger, SourceUrlPolicy } from '../core/index.ts';
import type { ApiBuilds } from './builds/api-builds.ts';
import type { Uploads } from './builds/uploads.ts';
import type { PageLinks } from './pages/index.ts';

/** What the API is built from: made by the composition root (`runApi`), or by a test. */
export interface ApiDeps {
  /** The API's normal (non-blocking) connection. */
  redis: Redis;
  queue: JobQueue;
  nodes: NodeRegistry;
  /** Pool settings per arch (min, max, slots per node, desired). */
  pools: PoolStore;
  /** Pools with their load and estimated wait. */
  poolStatus: PoolStatusReader;
  /** The image catalog (current version per image and arch). */
  catalog: ImageCatalog;
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
  /** Builds (`/v1/builds`, `/v1/uploads`, the uploads' git endpoint); the routes are left out without it. */
  builds?: { builds: ApiBuilds; uploads: Uploads; publicUrl: () => string };
}

/** The stores the routes read, built once from the API's connection (by `runApi`, or a test). */
export function createApiStores(o: {
  redis: Redis;
  keys: Keys;
  queue: JobQueue;
  nodes: NodeRegistry;
  /** How long an arch's median run time is reused (PoolStatusOptions.medianCacheMs); tests that finish jobs and read at once set 0. */
  medianCacheMs?: number;
}): Pick<ApiDeps, 'pools' | 'poolStatus' | 'catalog'> {
  const pools = createPoolStore(o.redis, o.keys);
  return {
    pools,
    poolStatus: createPoolStatus({ ...o, pools }),
    catalog: createImageCatalog(o.redis, o.keys),
  };
}
