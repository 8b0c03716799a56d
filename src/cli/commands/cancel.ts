import type { Command } from 'commander';
import type { JobRecord } from '../../core/light.ts';
import { apiClientFrom, CLIENT_ENV_HELP } from '../api-client.ts';
import { out, outJson } from '../output.ts';

/** `archway cancel JOB`. */
export function registerCancel(program: Command, env: Record<string, string | undefined>): void {
  program
    .command('cancel')
    .description('cancel a job: a queued one never starts, a running one is stopped within a second')
    .argument('<job>', 'job id')
    .option('--json', 'print the job as the API returns it')
    .addHelpText(
      'after',
      `${CLIENT_ENV_HELP}

Example:
  archway cancel 01J8Z3K5V2`,
    )
    .action(async (id: string, opts: { json?: boolean }) => {
      const job = await apiClientFrom(env).json<JobRecord>(
        'POST',
        `/v1/jobs/${encodeURIComponent(id)}/cancel`,
      );
      if (opts.json) return outJson(job);
      await out(
        job.state === 'canceled'
          ? `canceled ${job.id}\n`
          : `cancel requested: ${job.id} is ${job.state}; its worker stops it within a second\n`,
      );
    });
}
