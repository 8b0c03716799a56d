import type { Command } from 'commander';
import { runApi } from '../../api/index.ts';
import { withLogFormat } from '../log-format.ts';

/** `archway api`: the HTTP API process (one per systemd unit; `up` runs one too). */
export function registerApi(program: Command, env: Record<string, string | undefined>): void {
  withLogFormat(program.command('api'), env)
    .description('run the HTTP API: job submission, logs, cancel, health, OpenAPI docs at /docs')
    .addHelpText(
      'after',
      `
Environment (docs/configuration.md lists every variable):
  REDIS_URL            Redis (default redis://127.0.0.1:6379)
  ARCHWAY_PORT         port to listen on (default 8080); ARCHWAY_HOST the address (127.0.0.1)
  ARCHWAY_TOKEN        the admin token; ARCHWAY_TOKENS more, as name:scope+scope:secret,...
  ARCHWAY_POOL_PATH    the pool whose blobs/ the API serves (default /var/lib/archway)
  ARCHWAY_LOG_LEVEL    info (default) or debug (one line per request), ...
  ARCHWAY_LOG_FORMAT   pretty or json (default: pretty on a terminal)

Example:
  ARCHWAY_TOKEN=$(openssl rand -hex 24) ARCHWAY_PORT=8080 archway api`,
    )
    .action(async () => {
      const api = await runApi(env);
      process.stderr.write(`archway: API listening on ${api.url} (docs at ${api.url}/docs)\n`);
      await api.closed;
    });
}
