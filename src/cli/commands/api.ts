import type { Command } from 'commander';
import { runApi } from '../../api/index.ts';

/** `archway api`: the HTTP API process (one per systemd unit; `up` runs one too). */
export function registerApi(program: Command, env: Record<string, string | undefined>): void {
  program
    .command('api')
    .description('run the HTTP API: job submission, logs, cancel, health, OpenAPI docs at /docs')
    .action(async () => {
      const api = await runApi(env);
      process.stderr.write(`archway: API listening on ${api.url} (docs at ${api.url}/docs)\n`);
      await api.closed;
    });
}
