import type { Command } from 'commander';
import { apiClientFrom, CLIENT_ENV_HELP } from '../api-client.ts';
import { describeEnd, exitCodeOf } from '../exit-codes.ts';
import { followJob } from '../follow.ts';
import { createLogRenderer, LOG_ENV_HELP, logColor } from '../log-render.ts';
import { out } from '../output.ts';

/** `archway logs JOB [--follow]`. */
export function registerLogs(program: Command, env: Record<string, string | undefined>): void {
  program
    .command('logs')
    .description("print a job's log (--follow: until the job ends, then exit with the job's code)")
    .argument('<job>', 'job id')
    .option('--follow', "keep printing as the job writes, until it ends; exit with the job's code")
    .option(
      '--raw',
      'the log as stored: with its travis_fold/travis_time marker lines, and colour codes even when not on a terminal',
    )
    .addHelpText(
      'after',
      `${CLIENT_ENV_HELP}${LOG_ENV_HELP}

Example:
  archway logs 01J8Z3K5V2 --follow`,
    )
    .action(async (id: string, opts: { follow?: boolean; raw?: boolean }) => {
      const api = apiClientFrom(env);
      const render = createLogRenderer({ color: logColor(process.stdout, env), raw: opts.raw === true });
      if (opts.follow) {
        const end = await followJob(api, id, render);
        process.stderr.write(describeEnd(id, end));
        process.exitCode = exitCodeOf(end);
        return;
      }
      const res = await api.request('GET', `/v1/jobs/${encodeURIComponent(id)}/log`, { timeoutMs: 60_000 });
      await out(render.push(await res.text()) + render.end());
    });
}
