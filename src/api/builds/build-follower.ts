import type { Redis } from 'ioredis';
import { createJobEvents, createLease, type JobQueue } from '../../../queue/index.ts';
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

const LEASE_MS = 15_000;

/**
 * Advances API builds: follows the job events (queue's reader, from its saved position) and hands
 * each final state of a job of an API build to the build's stage machine, which queues the next
 * stage or decides the build. One API process follows at a time (a lease); the GitHub App's
 * reporter does the same for its builds.
 */
export function createBuildFollower(o: BuildFollowerOptions): BuildFollower {
  const log = o.logger.child({ component: 'build-follower' });
  const lease = createLease(o.redis, o.keys.buildFollowerLease, LEASE_MS);
  const events = createJobEvents(o.redis, o.keys);
  const position = events.position(o.keys.buildFollowerPosition);
  let stopped = false;
  let loop: Promise<void> | undefined;
  let conn: Redis | undefined;
  let sweep: NodeJS.Timeout | undefined;
  let closing: Promise<void> | undefined;

  async function run(): Promise<void> {
    conn = o.duplicate();
    while (!stopped) {
      try {
        if (!(await lease.take())) {
          await new Promise((r) => setTimeout(r, 1000));
          continue;
        }
        const read = await events.readEvents(conn, await position.get(), 1000);
        for (const e of read.events) {
          if (stopped) break;
          if (FINAL_STATES.includes(e.to)) {
            const build = (await o.queue.get(e.job))?.labels.build;
            if (build) await o.builds.jobFinished(e.job, build, e.to);
          }
          await position.set(e.id);
        }
        if (!stopped && read.lastId !== read.events.at(-1)?.id) await position.set(read.lastId);
      } catch (e) {
        if (stopped) break;
        // Redis away, or a record that does not parse: the same entry is tried again.
        log.warn({ err: toError(e).message }, 'advancing builds failed; trying again');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  return {
    async start() {
      await position.get();
      loop = run();
      sweep = setInterval(() => {
        o.builds
          .sweepUploads()
          .catch((e: unknown) => log.warn({ err: toError(e).message }, 'upload sweep failed'));
      }, o.sweepEveryMs ?? 600_000);
      sweep.unref();
    },
    close() {
      closing ??= (async () => {
        stopped = true;
        clearInterval(sweep);
        await loop?.catch(() => undefined);
        await lease.release();
        await conn?.quit().catch(() => undefined);
      })();
      return closing;
    },
  };
}
