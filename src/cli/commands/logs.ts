import type { Command } from 'commander';
import { apiClientFrom, CLIENT_ENV_HELP } from '../api-client.ts';
import { describeEnd, exitCodeOf } from '../exit-codes.ts';
import { followJob } from '../follow.ts';
import { out } from '../output.ts';

/** `archway logs JOB [--follow]`. */
export function registerLogs(program: Command, env: Record<string, string | undefined>): void {
  program
    .command('logs')
    .description("print a job's log (--follow: until the job ends, then exit with the job's code)")
    .argument('<job>', 'job id')
    .option('--follow', "keep printing as the job writes, until it ends; exit with the job's code")
    .addHelpText(
      'after',
      `${CLIENT_ENV_HELP}

Example:
  archway logs 01J8Z3K5V2 --follow`,
    )
    .action(async (id: string, opts: { follow?: boolean }) => {
      const api = apiClientFrom(env);
      if (opts.follow) {
        const end = await followJob(api, id);
        process.stderr.write(describeEnd(id, end));
        process.exitCode = exitCodeOf(end);
        return;
      }
      const res = await api.request('GET', `/v1/jobs/${encodeURIComponent(id)}/log`, { timeoutMs: 60_000 });
      await out(await res.text());
    });
}
