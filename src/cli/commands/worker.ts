import type { Command } from 'commander';
import { runWorker } from '../../../workers/index.ts';
import { parseArch } from '../../domain.ts';
import { positiveNumber } from '../parse.ts';
import { VERSION } from '../version.ts';

export function registerWorker(program: Command, env: Record<string, string | undefined>): void {
  program
    .command('worker')
    .description('run a worker node: take jobs of one arch from Redis and run them on this host')
    .requiredOption('--arch <arch>', 'amd64, arm64, ppc64le or s390x (foreign arches run emulated)')
    .option('--slots <n>', 'jobs run at once', '2')
    .option('--warm <n>', 'warm containers kept per image (0 = every job starts cold)', '1')
    .action(async (opts: { arch: string; slots: string; warm: string }) => {
      const warm = Number(opts.warm);
      if (!Number.isInteger(warm) || warm < 0)
        throw new Error(`--warm: expected 0 or a positive integer, got '${opts.warm}'`);
      await runWorker({
        env,
        arch: parseArch(opts.arch, '--arch'),
        slots: positiveNumber('--slots', opts.slots, true),
        warm,
        version: VERSION,
      });
    });
}
