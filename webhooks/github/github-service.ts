import type { FastifyPluginAsync } from 'fastify';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { createTaskQueue, type JobQueue } from '../../queue/index.ts';
import {
  type GitHubConfig,
  type Keys,
  type Logger,
  type SourceUrlPolicy,
  toError,
} from '../../src/core/index.ts';
import type { ImageToolchain } from '../repo-config/index.ts';
import { type Builds, createBuilds } from './builds.ts';
import { type CheckRuns, createCheckRuns } from './check-runs.ts';
import { createGitHubClient, type GitHubClient } from './github-client.ts';
import { createDeliveryProcessor } from './process-delivery.ts';
import { createReporter, type Reporter } from './reporter.ts';
import { createWebhookRoutes, type Delivery } from './webhook-routes.ts';

export interface GitHubServiceOptions {
  /** The App's settings, with `privateKey` as PEM text (see loadPrivateKey). */
  config: GitHubConfig;
  /** A normal (non-blocking) connection. */
  redis: Redis;
  /** Makes the connections the workers and the reporter block on. */
  duplicate: () => Redis;
  keys: Keys;
  queue: JobQueue;
  logger: Logger;
  /** The API's address as users reach it (check runs link to job logs). */
  publicUrl: () => string;
  /** A job's page for people (a signed link): what check runs' Details open. Default: `<publicUrl>/v1/jobs/<id>/log`. */
  jobPageUrl?: (jobId: string) => string;
  /** Which source URLs webhook jobs may use (loopback only in tests). */
  sourcePolicy: SourceUrlPolicy;
  /** Whether builds' jobs get `network: egress` (as Travis jobs had network). Default true. */
  egress?: boolean;
  /** Deliveries processed at once. Default 4. */
  concurrency?: number;
  /** First retry delay of a failed GitHub call, in ms (doubles up to retryMaxMs). Default 1000. */
  retryBaseMs?: number;
  /** Longest retry delay, in ms. Default 60000. */
  retryMaxMs?: number;
  /** How often source tokens of waiting jobs are renewed, in ms. Default 60000. */
  renewEveryMs?: number;
  /** A client to use instead of octokit's App against `config.apiUrl` (benchmarks). */
  github?: GitHubClient;
  /** What images provide, for the compiler and version warnings in check runs. Default: none known. */
  toolchains?: Readonly<Record<string, ImageToolchain>>;
}

export interface GitHubService {
  /** The `POST /webhooks/github` route, for the API to register. */
  readonly routes: FastifyPluginAsync;
  readonly builds: Builds;
  readonly checks: CheckRuns;
  /** Starts the check run sync, the reporter, the delivery worker and the token renewal. */
  start(): Promise<void>;
  /**
   * Idempotent. Order: the delivery queue (its worker first: deliveries in flight finish), the
   * token renewal, the reporter, then the check run sync (a call in flight finishes). Every step
   * runs even when one before it fails.
   */
  close(): Promise<void>;
}

const DeliveryData = z.object({ id: z.string(), event: z.string(), payload: z.string() });
/** Tries of one delivery (GitHub or Redis failing while it is processed). */
const DELIVERY_ATTEMPTS = 20;

/**
 * The GitHub App inside the API process: the webhook route (verify, dedup, enqueue), a BullMQ
 * worker on the `github-events` queue that acts on deliveries (config, jobs, check runs), the
 * reporter that turns job events into check run updates, and the check run sync with retries.
 */
export function createGitHubService(o: GitHubServiceOptions): GitHubService {
  const log = o.logger.child({ component: 'github' });
  const github =
    o.github ??
    createGitHubClient({
      appId: o.config.appId,
      privateKey: o.config.privateKey,
      apiUrl: o.config.apiUrl,
      logger: o.logger,
    });
  const checks = createCheckRuns({
    redis: o.redis,
    duplicate: o.duplicate,
    keys: o.keys,
    github,
    logger: o.logger,
    ...(o.retryBaseMs !== undefined ? { retryBaseMs: o.retryBaseMs } : {}),
    ...(o.retryMaxMs !== undefined ? { retryMaxMs: o.retryMaxMs } : {}),
  });
  const builds = createBuilds({
    redis: o.redis,
    keys: o.keys,
    queue: o.queue,
    github,
    checks,
    logger: o.logger,
    publicUrl: o.publicUrl,
    ...(o.jobPageUrl ? { jobPageUrl: o.jobPageUrl } : {}),
    autoCancel: o.config.autoCancel,
    sourcePolicy: o.sourcePolicy,
    toolchains: o.toolchains,
    egress: o.egress ?? true,
  });
  const reporter: Reporter = createReporter({
    redis: o.redis,
    duplicate: o.duplicate,
    keys: o.keys,
    queue: o.queue,
    builds,
    checks,
    logger: o.logger,
  });
  const process = createDeliveryProcessor({ builds, queue: o.queue, logger: o.logger });
  const events = createTaskQueue({
    redis: o.redis,
    duplicate: o.duplicate,
    keys: o.keys,
    name: o.keys.githubEventsQueue,
    schema: DeliveryData,
    attempts: DELIVERY_ATTEMPTS,
    keepCompletedSeconds: 86_400,
    keepFailedSeconds: 7 * 86_400,
    concurrency: o.concurrency ?? 4,
    ...(o.retryBaseMs !== undefined ? { retryBaseMs: o.retryBaseMs } : {}),
    ...(o.retryMaxMs !== undefined ? { retryMaxMs: o.retryMaxMs } : {}),
    onFailed: (f) => {
      const d = f.data as { event?: string } | undefined;
      log.warn(
        { delivery: f.id, event: d?.event, attempt: f.attempt, err: f.err.message },
        'processing a delivery failed',
      );
    },
    onError: (e) => log.debug({ err: e.message }, 'github-events queue error'),
  });

  const enqueue = (d: Delivery) => events.add(d.id, d);

  const routes = createWebhookRoutes({
    secrets: o.config.webhookSecrets,
    redis: o.redis,
    keys: o.keys,
    enqueue,
    memoryLimitBytes: o.config.webhookMemoryBytes,
  });

  let renew: NodeJS.Timeout | undefined;
  let renewing: Promise<void> | undefined;
  let closing: Promise<void> | undefined;

  return {
    routes,
    builds,
    checks,
    async start() {
      await checks.start();
      await reporter.start();
      await events.start(async (d) => {
        await process(d);
        return undefined;
      });
      renew = setInterval(() => {
        renewing ??= builds
          .renewCredentials()
          .catch((e: unknown) => log.warn({ err: toError(e).message }, 'renewing source tokens failed'))
          .finally(() => {
            renewing = undefined;
          });
      }, o.renewEveryMs ?? 60_000);
      renew.unref();
      log.info({ api: o.config.apiUrl, app: o.config.appId }, 'GitHub App ready: POST /webhooks/github');
    },
    close() {
      closing ??= (async () => {
        const steps: [string, () => Promise<unknown> | undefined][] = [
          ['delivery queue', () => events.close()],
          [
            'token renewal',
            () => {
              clearInterval(renew);
              return renewing;
            },
          ],
          ['reporter', () => reporter.close()],
          ['check run sync', () => checks.close()],
        ];
        for (const [what, step] of steps) {
          try {
            await step();
          } catch (e) {
            log.warn({ err: toError(e).message }, `closing the ${what} failed`);
          }
        }
      })();
      return closing;
    },
  };
}
