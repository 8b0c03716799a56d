import type { Command } from 'commander';
import { runScaler } from '../../../ops/scaler/index.ts';
import { withLogFormat } from '../log-format.ts';

/** `archway scaler`: the autoscaler process (one per installation; a second one stands by). */
export function registerScaler(program: Command, env: Record<string, string | undefined>): void {
  withLogFormat(program.command('scaler'), env)
    .description(
      'run the autoscaler: sizes each pool from its queue and asks a provider (ARCHWAY_SCALER_PROVIDER: local or exec) to act',
    )
    .addHelpText(
      'after',
      `
Environment (docs/configuration.md lists every variable):
  REDIS_URL                    Redis (default redis://127.0.0.1:6379)
  ARCHWAY_SCALER_PROVIDER      local (worker processes on this host) or exec (your command)
  ARCHWAY_SCALER_EXEC_COMMAND  the command the exec provider runs with the arch and the count
  ARCHWAY_SCALER_ARCHES        the pools it sizes (default all)
  ARCHWAY_SCALER_INTERVAL_SECONDS, _UP_AFTER_SECONDS, _DOWN_AFTER_SECONDS, ...: its policy
  ARCHWAY_LOG_LEVEL, ARCHWAY_LOG_FORMAT

Example:
  ARCHWAY_SCALER_PROVIDER=local archway scaler`,
    )
    .action(async () => {
      const p = await runScaler(env);
      process.stderr.write(
        `archway: scaler running (provider ${p.provider.name}, pools ${p.arches.join(', ')})\n`,
      );
      await p.closed;
    });
}
