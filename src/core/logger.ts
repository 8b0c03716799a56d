import { type Logger, pino } from 'pino';
import pinoPretty from 'pino-pretty';

export type { Logger } from 'pino';

export interface LoggerOptions {
  /** pino level. Default 'info'. */
  level?: string;
  /** Name of the process (api, worker, cli). */
  name: string;
  /**
   * `pretty`: one short human line per entry (time, level in colour, process and component,
   * message, the few other fields) for a person at a terminal; `json`: pino's JSON lines, for
   * journald and log shippers. Default: pretty when stderr is a terminal, else json.
   */
  format?: 'pretty' | 'json' | undefined;
}

/** Fields every entry carries that a person at a terminal does not need on each line. */
const PRETTY_IGNORE = 'pid,hostname,name,component,node';

/**
 * The process's logger: on stderr, so stdout stays the job's or the command's own output.
 * Never pass secrets or tokens to it; the `redact` list is a last guard, not the plan.
 */
export function createLogger(opts: LoggerOptions): Logger {
  const pretty = (opts.format ?? (process.stderr.isTTY ? 'pretty' : 'json')) === 'pretty';
  const options = {
    name: opts.name,
    level: opts.level ?? 'info',
    redact: {
      paths: ['token', '*.token', 'secrets', '*.secrets', 'authorization', '*.authorization'],
      censor: '[secure]',
    },
  };
  if (!pretty) return pino(options, pino.destination({ fd: 2, sync: true }));
  return pino(
    options,
    // In this thread, synchronously (no transport worker): a line is out before the process exits.
    pinoPretty({
      destination: 2,
      sync: true,
      colorize: process.stderr.isTTY === true,
      translateTime: 'SYS:HH:MM:ss',
      ignore: PRETTY_IGNORE,
      singleLine: true,
      messageFormat: '{name}{if component}/{component}{end}{if node} {node}{end}: {msg}',
    }),
  );
}
