import { toError } from './errors/to-error.ts';
import type { Logger } from './logger.ts';

export interface CloserOptions {
  /** What stops (`api`, `scaler`): for the log lines. */
  name: string;
  logger: Logger;
  /** Cleanup steps in the order they run; every step runs even when one before it fails. */
  steps: readonly (readonly [string, () => Promise<unknown>])[];
  /** Close on the first SIGTERM or SIGINT; a second one, or `timeoutMs` without finishing, exits at once. */
  handleSignals: boolean;
  /** How long a close started by a signal may take before the process exits at once. Default: no limit. */
  timeoutMs?: number;
  /**
   * What a second signal does instead of exiting at once: the worker ends its running jobs (they
   * go back to the queue) and the close goes on. A third signal exits at once.
   */
  onSecondSignal?: () => Promise<unknown>;
  /**
   * Close as on a first signal once the process's parent is no longer this pid (checked every
   * second): a part of `up` whose `up` was killed stops instead of running on unsupervised.
   */
  parentPid?: number;
}

export interface Closer {
  /** Idempotent: runs the steps once. */
  close(): Promise<void>;
  /** Settles once close() has finished. */
  readonly closed: Promise<void>;
}

/** A process's shutdown, handled once: ordered, complete cleanup, with signals wired as STYLE.md asks. */
export function createCloser(o: CloserOptions): Closer {
  let closing: Promise<void> | undefined;
  let resolveClosed: () => void = () => {};
  const closed = new Promise<void>((r) => {
    resolveClosed = r;
  });
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals === 2 && o.onSecondSignal) {
      o.logger.warn({ signal }, 'second signal: forcing (a third one exits now)');
      o.onSecondSignal().catch((e: unknown) => o.logger.warn({ err: toError(e).message }, 'forcing failed'));
      return;
    }
    if (signals > 1) {
      o.logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    o.logger.info({ signal }, 'closing (a second signal forces)');
    if (o.timeoutMs !== undefined) {
      const ms = o.timeoutMs;
      setTimeout(() => {
        o.logger.error(`did not close within ${ms} ms: exiting now`);
        process.exit(1);
      }, ms).unref();
    }
    void close();
  };
  const close = () => {
    closing ??= (async () => {
      for (const [what, step] of o.steps) {
        try {
          await step();
        } catch (e) {
          o.logger.warn({ err: toError(e).message }, `closing the ${what} failed`);
        }
      }
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      o.logger.info(`${o.name} stopped`);
      resolveClosed();
    })();
    return closing;
  };
  if (o.handleSignals) {
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  }
  if (o.parentPid !== undefined) {
    const parent = o.parentPid;
    const watch = setInterval(() => {
      if (process.ppid === parent) return;
      clearInterval(watch);
      o.logger.warn({ parent }, 'the process that started this one is gone: stopping as on SIGTERM');
      onSignal('SIGTERM');
    }, 1000);
    watch.unref();
    void closed.then(() => clearInterval(watch));
  }
  return { close, closed };
}
