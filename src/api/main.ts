import { recipeToolchains } from '../../images/index.ts';
import {
  createJobQueue,
  createNodeRegistry,
  createPoolStore,
  createRetentionSweep,
  createStallWatch,
  MAX_ATTEMPTS,
} from '../../queue/index.ts';
import { createGitHubService, loadPrivateKey } from '../../webhooks/index.ts';
import {
  ApiConfig,
  connectRedis,
  createCloser,
  createKeys,
  createLogger,
  createRedis,
  listenError,
  parseConfig,
  toError,
} from '../core/index.ts';
import { createApiStores } from './api-deps.ts';
import { type ApiApp, buildApp } from './build-app.ts';
import { createApiBuilds, MAX_CONFIG_BYTES } from './builds/api-builds.ts';
import { createBuildFollower } from './builds/build-follower.ts';
import { createGitConfigReader } from './builds/git-config-reader.ts';
import { createUploads } from './builds/uploads.ts';
import { createPageLinks } from './pages/index.ts';

/** A lost node's record is deleted this long after its last heartbeat. */
const FORGET_LOST_NODES_AFTER_MS = 86_400_000;

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

/**
 * The composition root of `archway api`: parses the config once, builds the logger, the Redis
 * connections, the queue and the node registry, refuses a Redis that may evict keys, and listens.
 */
export async function runApi(
  env: Record<string, string | undefined>,
  opts: RunApiOptions = {},
): Promise<ApiProcess> {
  const config = parseConfig(ApiConfig, env);
  const logger = createLogger({
    name: 'api',
    level: config.ARCHWAY_LOG_LEVEL,
    format: config.ARCHWAY_LOG_FORMAT,
  });
  const githubKey = config.github ? await loadPrivateKey(config.github.privateKey) : undefined;
  const redis = await connectRedis({ url: config.REDIS_URL, name: 'archway-api', logger });

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
  // Builds through the API: uploads kept on this host, the stage machine advanced by the follower.
  const uploadDir = config.ARCHWAY_UPLOAD_DIR ?? `${config.ARCHWAY_POOL_PATH.replace(/\/+$/, '')}/uploads`;
  // Set once listening: the replica's own address, what the others fetch its uploads from.
  let listenUrl = '';
  const uploads = createUploads({
    dir: uploadDir,
    redis,
    keys,
    selfUrl: () => config.ARCHWAY_REPLICA_URL ?? listenUrl,
    limitBytes: config.ARCHWAY_UPLOAD_LIMIT_BYTES,
    unusedTtlMs: 3_600_000,
    logger,
  });
  const apiBuilds = createApiBuilds({
    redis,
    keys,
    queue,
    pools: createPoolStore(redis, keys),
    uploads,
    gitConfig: createGitConfigReader({
      policy: sourcePolicy,
      limitBytes: config.ARCHWAY_CONFIG_FETCH_LIMIT_BYTES,
      timeoutMs: config.ARCHWAY_CONFIG_FETCH_TIMEOUT_SECONDS * 1000,
      maxFileBytes: MAX_CONFIG_BYTES,
      // Beside the uploads (the disk the operator gave the API for trees), not a tmpfs.
      scratchDir: `${uploadDir}/.config-reads`,
      logger,
    }),
    logger,
    publicUrl: () => publicUrl,
    sourcePolicy,
    egress: config.ARCHWAY_EGRESS,
    toolchains: await recipeToolchains(),
    uploadRetentionMs: config.ARCHWAY_UPLOAD_RETENTION_HOURS * 3_600_000,
    ...(github ? { githubRerun: (jobId: string) => github.builds.rerunJob(jobId) } : {}),
  });
  const buildFollower = createBuildFollower({
    redis,
    duplicate: () => {
      const r = createRedis({ url: config.REDIS_URL, name: 'archway-api-builds', blocking: true });
      r.on('error', () => undefined);
      return r;
    },
    keys,
    queue,
    builds: apiBuilds,
    logger,
  });
  const app = buildApp(config, {
    ...(github ? { webhookRoutes: github.routes } : {}),
    builds: { builds: apiBuilds, uploads, publicUrl: () => publicUrl },
    sourcePolicy,
    pageLinks,
    egress: config.ARCHWAY_EGRESS,
    redis,
    queue,
    nodes,
    ...createApiStores({ redis, keys, queue, nodes }),
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
  // The repositories' default cap is this process's setting; every worker reads it from Redis.
  await queue.limits.setDefault(config.ARCHWAY_REPO_CONCURRENCY ?? null);
  // Held jobs whose slot a lost node's lease freed (no job end promoted them) run within seconds.
  const wakeHeld = setInterval(() => {
    queue.limits
      .wake()
      .then((w) => queue.promote(w))
      .catch((e: unknown) => logger.warn({ err: toError(e).message }, 'waking held jobs failed'));
  }, 5_000);
  wakeHeld.unref();
  // Finished jobs leave Redis with their logs: records, secrets and index entries alike.
  const retention = createRetentionSweep({ store: queue.store, logger });
  retention.start();
  // A lost node's record goes a day after its last heartbeat (it left the default list long before).
  const forgetNodes = setInterval(() => {
    nodes
      .forgetLost(FORGET_LOST_NODES_AFTER_MS)
      .then((ids) => {
        if (ids.length) logger.info({ nodes: ids }, 'deleted the records of nodes lost for a day');
      })
      .catch((e: unknown) => logger.warn({ err: toError(e).message }, 'deleting lost nodes failed'));
  }, 60_000);
  forgetNodes.unref();
  await github?.start();
  await buildFollower.start();

  // Order: the HTTP server first (no new requests; open follows are ended), then the queue, then
  // Redis, which both use. Every step runs even when one before it fails.
  const { close, closed } = createCloser({
    name: 'api',
    logger,
    handleSignals: opts.handleSignals ?? true,
    ...(config.ARCHWAY_STOP_WITH_PID !== undefined ? { parentPid: config.ARCHWAY_STOP_WITH_PID } : {}),
    timeoutMs: CLOSE_TIMEOUT_MS,
    steps: [
      ['http server', () => app.close()],
      ['github app', async () => github?.close()],
      ['build follower', () => buildFollower.close()],
      ['stall watch', () => stallWatch.close()],
      ['retention sweep', () => retention.close()],
      ['lost node sweep', async () => clearInterval(forgetNodes)],
      ['held job wake-up', async () => clearInterval(wakeHeld)],
      ['queue', () => queue.close()],
      ['redis', () => redis.quit()],
    ],
  });

  try {
    await app.listen({ host: config.ARCHWAY_HOST, port: config.ARCHWAY_PORT });
  } catch (e) {
    await close();
    throw listenError(e, 'ARCHWAY_PORT', `${config.ARCHWAY_HOST} port ${config.ARCHWAY_PORT}`);
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.ARCHWAY_PORT;
  const host = config.ARCHWAY_HOST.includes(':') ? `[${config.ARCHWAY_HOST}]` : config.ARCHWAY_HOST;
  const url = `http://${host}:${port}`;
  publicUrl ||= url;
  listenUrl = url;
  logger.info({ url, tokens: config.tokens.map((t) => t.name) }, 'api listening');
  return { app, url, close, closed };
}
