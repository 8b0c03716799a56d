import { type Logger, pino } from 'pino';

export type { Logger } from 'pino';

export interface LoggerOptions {
  /** pino level. Default 'info'. */
  level?: string;
  /** Name of the process (api, worker, cli). */
  name: string;
}

/**
 * The process's logger: JSON lines on stderr, so stdout stays the job's or the command's own output.
 * Never pass secrets or tokens to it; the `redact` list is a last guard, not the plan.
 */
export function createLogger(opts: LoggerOptions): Logger {
  return pino(
    {
      name: opts.name,
      level: opts.level ?? 'info',
      redact: {
        paths: ['token', '*.token', 'secrets', '*.secrets', 'authorization', '*.authorization'],
        censor: '[secure]',
      },
    },
    pino.destination({ fd: 2, sync: true }),
  );
}
