import type { Command } from 'commander';
import { runScaler } from '../../../ops/scaler/index.ts';

/** `archway scaler`: the autoscaler process (one per installation; a second one stands by). */
export function registerScaler(program: Command, env: Record<string, string | undefined>): void {
  program
    .command('scaler')
    .description(
      'run the autoscaler: sizes each pool from its queue and asks a provider (ARCHWAY_SCALER_PROVIDER: local or exec) to act',
    )
    .action(async () => {
      const p = await runScaler(env);
      process.stderr.write(
        `archway: scaler running (provider ${p.provider.name}, pools ${p.arches.join(', ')})\n`,
      );
      await p.closed;
    });
}
