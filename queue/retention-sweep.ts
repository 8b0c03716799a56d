import { type Logger, toError } from '../src/core/index.ts';
import type { JobStore } from './job-store.ts';

/** How often the sweep looks for jobs whose retention has passed. */
export const SWEEP_INTERVAL_MS = 60_000;

export interface RetentionSweepOptions {
  store: JobStore;
  logger: Logger;
  /** Default SWEEP_INTERVAL_MS. */
  intervalMs?: number;
}

export interface RetentionSweep {
  start(): void;
  /** One pass now: removes every job past its retention; returns how many. */
  sweep(): Promise<number>;
  /** Idempotent; waits for a pass under way. */
  close(): Promise<void>;
}

/**
 * Removes finished jobs once their retention (ARCHWAY_LOG_RETENTION_DAYS, as their logs) has
 * passed, with their entries in the listing indexes, so Redis holds no job for ever. Runs in the
 * control plane (the API process); two of them sweeping at once is harmless.
 */
export function createRetentionSweep(o: RetentionSweepOptions): RetentionSweep {
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<number> | undefined;
  let closed: Promise<void> | undefined;

  let backfilled = false;
  async function sweep(): Promise<number> {
    if (!backfilled) {
      // Once per process: jobs that finished before records expired get their expiry now.
      const n = await o.store.backfillRetention();
      if (n > 0) o.logger.info({ jobs: n }, 'gave finished jobs from before retention their expiry');
      backfilled = true;
    }
    let total = 0;
    for (;;) {
      const ids = await o.store.sweepExpired(Date.now(), 500);
      total += ids.length;
      if (ids.length < 500) break;
    }
    if (total > 0) o.logger.info({ jobs: total }, 'removed jobs past their retention');
    return total;
  }

  const pass = () => {
    running ??= sweep()
      .catch((e: unknown) => {
        o.logger.warn({ err: toError(e).message }, 'retention sweep failed; it runs again');
        return 0;
      })
      .finally(() => {
        running = undefined;
      });
    return running;
  };

  return {
    start() {
      timer ??= setInterval(() => void pass(), o.intervalMs ?? SWEEP_INTERVAL_MS);
      timer.unref();
      void pass();
    },
    sweep: pass,
    close() {
      closed ??= (async () => {
        clearInterval(timer);
        await running;
      })();
      return closed;
    },
  };
}
