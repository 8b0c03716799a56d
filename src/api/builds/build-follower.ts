import type { Redis } from 'ioredis';
import { createJobEventFollower, type JobQueue } from '../../../queue/index.ts';
import { FINAL_STATES, type Keys, type Logger, toError } from '../../core/index.ts';
import type { ApiBuilds } from './api-builds.ts';

export interface BuildFollowerOptions {
  redis: Redis;
  /** Makes the connection the follower blocks on in XREAD. */
  duplicate: () => Redis;
  keys: Keys;
  queue: JobQueue;
  builds: ApiBuilds;
  logger: Logger;
  /** How often uploads are swept, in ms. Default 600000. */
  sweepEveryMs?: number;
}

export interface BuildFollower {
  start(): Promise<void>;
  /** Idempotent: ends the loop (within a second), releases the lease, then its connection. */
  close(): Promise<void>;
}

/**
 * Advances API builds: follows the job events (queue's reader, from its saved position) and hands
 * each final state of a job of an API build to the build's stage machine, which queues the next
 * stage or decides the build. One API process follows at a time (a lease); the GitHub App's
 * reporter does the same for its builds.
 */
export function createBuildFollower(o: BuildFollowerOptions): BuildFollower {
  const log = o.logger.child({ component: 'build-follower' });
  const follower = createJobEventFollower(
    {
      redis: o.redis,
      duplicate: o.duplicate,
      keys: o.keys,
      leaseKey: o.keys.buildFollowerLease,
      positionKey: o.keys.buildFollowerPosition,
      logger: log,
      what: 'advancing builds',
    },
    async (e) => {
      if (!FINAL_STATES.includes(e.to)) return;
      const build = (await o.queue.get(e.job))?.labels.build;
      if (build) await o.builds.jobFinished(e.job, build, e.to);
    },
  );
  let sweep: NodeJS.Timeout | undefined;
  let closing: Promise<void> | undefined;

  return {
    async start() {
      await follower.start();
      sweep = setInterval(() => {
        o.builds
          .sweepUploads()
          .catch((e: unknown) => log.warn({ err: toError(e).message }, 'upload sweep failed'));
      }, o.sweepEveryMs ?? 600_000);
      sweep.unref();
    },
    close() {
      closing ??= (async () => {
        clearInterval(sweep);
        await follower.close();
      })();
      return closing;
    },
  };
}
