import { recipeToolchains } from '../../images/index.ts';
import {
  createJobQueue,
  createNodeRegistry,
  createRetentionSweep,
  createStallWatch,
  MAX_ATTEMPTS,
} from '../../queue/index.ts';
import { createGitHubService, loadPrivateKey } from '../../webhooks/index.ts';
import {
  ApiConfig,
  ArchwayError,
  assertNoEviction,
  createCloser,
  createKeys,
  createLogger,
  createRedis,
  parseConfig,
  toError,
} from '../core/index.ts';
import { type ApiApp, buildApp } from './build-app.ts';
import { createPageLinks } from './pages/index.ts';

/** Longest a graceful close may take before the process is stopped anyway. */
const CLOSE_TIMEOUT_MS = 15_000;

export interface RunApiOptions {
  /** Handle SIGTERM and SIGINT (close; a second signal or CLOSE_TIMEOUT_MS forces an exit). Default true. */
  handleSignals?: boolean;
}

export interface ApiProcess {
  app: ApiApp;
  /** Where the API listens, e.g. http://127.0.0.1:8080 (the real port when ARCHWAY_PORT is 0). */
  url: string;
  /** Idempotent: stops accepting requests, ends open log follows, then closes the queue and Redis. */
  close(): Promise<void>;
  /** Resolves once close() has finished. */
  readonly closed: Promise<void>;
}

/** The URL with any password hidden, for messages and logs. */
function safeUrl(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, '//[secure]@');
}

/**
 * The composition root of `archway api`: parses the config once, builds the logger, the Redis
 * connections, the queue and the node registry, refuses a Redis that may evict keys, and listens.
 */
export async function runApi(
  env: Record<string, string | undefined>,
  opts: RunApiOptions = {},
): Promise<ApiProcess> {
  const config = parseConfig(ApiConfig, env);
  const logger = createLogger({ name: 'api', level: config.ARCHWAY_LOG_LEVEL });
  const githubKey = config.github ? await loadPrivateKey(config.github.privateKey) : undefined;
  const redis = createRedis({ url: config.REDIS_URL, name: 'archway-api' });
  redis.on('error', (e: Error) => logger.warn({ err: e.message }, 'redis connection error'));
  try {
    await redis.ping().catch((e: unknown) => {
      throw new ArchwayError(
        'REDIS_UNREACHABLE',
        `cannot reach Redis at ${safeUrl(config.REDIS_URL)}: ${toError(e).message}`,
        { httpStatus: 503, infra: true, cause: e },
      );
    });
    await assertNoEviction(redis);
  } catch (e) {
    redis.disconnect();
    throw e;
  }

  const keys = createKeys(config.ARCHWAY_REDIS_PREFIX);
  const queue = createJobQueue({
    redis,
    keys,
    logRetentionSeconds: Math.round(config.ARCHWAY_LOG_RETENTION_DAYS * 86_400),
  });
  const nodes = createNodeRegistry(redis, keys);
  const sourcePolicy = {
    allowLoopback: config.ARCHWAY_ALLOW_LOOPBACK_SOURCES,
    allow: config.ARCHWAY_SOURCE_ALLOW,
  };
  let publicUrl = config.ARCHWAY_PUBLIC_URL ?? '';
  if (!config.ARCHWAY_PAGE_SECRET)
    logger.warn('ARCHWAY_PAGE_SECRET is unset: signed page links and page logins end when this process does');
  const pageLinks = createPageLinks({
    secret: config.ARCHWAY_PAGE_SECRET,
    publicUrl: () => publicUrl,
    linkSeconds: config.ARCHWAY_PAGE_LINK_DAYS * 86_400,
    sessionSeconds: config.ARCHWAY_PAGE_SESSION_HOURS * 3600,
  });
  // The GitHub App runs in the API process: its route, the delivery worker, the reporter, the check run sync.
  const github =
    config.github && githubKey
      ? createGitHubService({
          config: { ...config.github, privateKey: githubKey },
          redis,
          duplicate: () => {
            const r = createRedis({ url: config.REDIS_URL, name: 'archway-api-github', blocking: true });
            r.on('error', (e: Error) => logger.debug({ err: e.message }, 'redis (github) connection error'));
            return r;
          },
          keys,
          queue,
          logger,
          publicUrl: () => publicUrl,
          jobPageUrl: (id) => pageLinks.jobUrl(id),
          sourcePolicy,
          // The shipped recipes' provides: check runs warn about a compiler or version an image lacks.
          toolchains: await recipeToolchains(),
          egress: config.ARCHWAY_EGRESS,
        })
      : undefined;
  const app = buildApp(config, {
    ...(github ? { webhookRoutes: github.routes } : {}),
    sourcePolicy,
    pageLinks,
    egress: config.ARCHWAY_EGRESS,
    redis,
    queue,
    nodes,
    keys,
    logger,
    createBlockingRedis: () => {
      const r = createRedis({ url: config.REDIS_URL, name: 'archway-api-follow', blocking: true });
      r.on('error', (e: Error) => logger.debug({ err: e.message }, 'redis (log follow) connection error'));
      return r;
    },
  });

  // The control plane runs the stall check of every arch queue, so a lost node's job is re-queued
  // even when no node of its arch is left.
  const stallWatch = createStallWatch({
    queue,
    keys,
    redis,
    duplicate: () => {
      const r = createRedis({ url: config.REDIS_URL, name: 'archway-api-stall-watch', blocking: true });
      r.on('error', () => undefined);
      return r;
    },
    maxStalledCount: MAX_ATTEMPTS - 1,
    logRetentionSeconds: Math.round(config.ARCHWAY_LOG_RETENTION_DAYS * 86_400),
    logger,
  });
  await stallWatch.start();
  // Finished jobs leave Redis with their logs: records, secrets and index entries alike.
  const retention = createRetentionSweep({ store: queue.store, logger });
  retention.start();
  await github?.start();

  // Order: the HTTP server first (no new requests; open follows are ended), then the queue, then
  // Redis, which both use. Every step runs even when one before it fails.
  const { close, closed } = createCloser({
    name: 'api',
    logger,
    handleSignals: opts.handleSignals ?? true,
    timeoutMs: CLOSE_TIMEOUT_MS,
    steps: [
      ['http server', () => app.close()],
      ['github app', async () => github?.close()],
      ['stall watch', () => stallWatch.close()],
      ['retention sweep', () => retention.close()],
      ['queue', () => queue.close()],
      ['redis', () => redis.quit()],
    ],
  });

  try {
    await app.listen({ host: config.ARCHWAY_HOST, port: config.ARCHWAY_PORT });
  } catch (e) {
    await close();
    throw e;
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.ARCHWAY_PORT;
  const host = config.ARCHWAY_HOST.includes(':') ? `[${config.ARCHWAY_HOST}]` : config.ARCHWAY_HOST;
  const url = `http://${host}:${port}`;
  publicUrl ||= url;
  logger.info({ url, tokens: config.tokens.map((t) => t.name) }, 'api listening');
  return { app, url, close, closed };
}
