import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { InvalidInputError, type JobRecord, NetworkMode } from '../../core/light.ts';
import { apiClientFrom, CLIENT_ENV_HELP } from '../api-client.ts';
import { describeEnd, exitCodeOf } from '../exit-codes.ts';
import { followJob } from '../follow.ts';
import { createLogRenderer, LOG_ENV_HELP, logColor } from '../log-render.ts';
import { out, outJson } from '../output.ts';
import { collect, keyValues, positiveNumber } from '../parse.ts';

interface SubmitOptions {
  arch: string;
  image: string;
  follow?: boolean;
  raw?: boolean;
  json?: boolean;
  env: string[];
  secret: string[];
  timeout?: string;
  silenceTimeout?: string;
  memory?: string;
  cpus?: string;
  pids?: string;
  disk?: string;
  priority?: string;
  network?: string;
  scriptFile?: string;
  label: string[];
  idempotencyKey?: string;
  git?: string;
  ref?: string;
  sha?: string;
}

/** The job spec the options and the script words make; every error names its option. */
export async function submitBody(words: string[], opts: SubmitOptions): Promise<Record<string, unknown>> {
  if (opts.network !== undefined && !NetworkMode.safeParse(opts.network).success)
    throw new InvalidInputError('--network', `expected none or egress, got '${opts.network}'`);
  if (opts.scriptFile !== undefined && words.length > 0)
    throw new InvalidInputError('--script-file', 'give the script as a file or after --, not both');
  let script = words.join(' ');
  if (opts.scriptFile !== undefined) {
    script = await readFile(opts.scriptFile, 'utf8').catch((e: NodeJS.ErrnoException) => {
      throw new InvalidInputError('--script-file', `cannot read ${opts.scriptFile}: ${e.code ?? e.message}`);
    });
  }
  if (script.trim() === '')
    throw new InvalidInputError('script', 'give the script after -- (or --script-file FILE)');
  const resources = {
    ...(opts.memory === undefined ? {} : { memoryMiB: positiveNumber('--memory', opts.memory, true) }),
    ...(opts.cpus === undefined ? {} : { cpus: positiveNumber('--cpus', opts.cpus) }),
    ...(opts.pids === undefined ? {} : { pids: positiveNumber('--pids', opts.pids, true) }),
    ...(opts.disk === undefined ? {} : { diskMiB: positiveNumber('--disk', opts.disk, true) }),
  };
  if ((opts.ref !== undefined || opts.sha !== undefined) && opts.git === undefined)
    throw new InvalidInputError(
      opts.ref !== undefined ? '--ref' : '--sha',
      'names a commit of --git URL: give --git too',
    );
  if (opts.sha !== undefined && !/^[0-9a-f]{40}$/.test(opts.sha))
    throw new InvalidInputError('--sha', `expected 40 lowercase hex digits, got '${opts.sha}'`);
  const source =
    opts.git === undefined
      ? undefined
      : {
          git: opts.git,
          ...(opts.ref === undefined ? {} : { ref: opts.ref }),
          ...(opts.sha === undefined ? {} : { sha: opts.sha }),
        };
  let priority: number | undefined;
  if (opts.priority !== undefined) {
    priority = positiveNumber('--priority', opts.priority, true);
    if (priority > 10)
      throw new InvalidInputError('--priority', `expected 1 (first) to 10, got '${priority}'`);
  }
  return {
    arch: opts.arch,
    image: opts.image,
    script,
    ...(opts.env.length ? { env: keyValues('--env', opts.env) } : {}),
    ...(opts.secret.length ? { secrets: keyValues('--secret', opts.secret) } : {}),
    ...(opts.label.length ? { labels: keyValues('--label', opts.label) } : {}),
    ...(opts.network ? { network: opts.network } : {}),
    ...(source ? { source } : {}),
    ...(Object.keys(resources).length ? { resources } : {}),
    ...(priority === undefined ? {} : { priority }),
    ...(opts.timeout === undefined
      ? {}
      : { timeoutSeconds: positiveNumber('--timeout', opts.timeout, true) }),
    ...(opts.silenceTimeout === undefined
      ? {}
      : { silenceTimeoutSeconds: positiveNumber('--silence-timeout', opts.silenceTimeout, true) }),
  };
}

/** `archway submit`: a job to the API; with --follow its log, then the job's exit code. */
export function registerSubmit(program: Command, env: Record<string, string | undefined>): void {
  program
    .command('submit')
    .description('submit a job to the API; prints its id (with --follow: its log, then exits with its code)')
    .requiredOption(
      '--arch <arch>',
      'amd64, arm64, ppc64le or s390x (aliases: x86_64, aarch64, ppc64el, ...)',
    )
    .requiredOption('--image <name>', 'image name, or name@sha256:<digest>')
    .option('--follow', "stream the job's log, then exit with the job's exit code")
    .option(
      '--raw',
      'with --follow: the log as stored (travis_fold/travis_time lines, colour codes when not on a terminal)',
    )
    .option('--json', 'print the created job (the API answer) as JSON instead of its id')
    .option('--env <KEY=VALUE>', 'environment variable for the script (repeatable)', collect, [])
    .option('--secret <KEY=VALUE>', 'like --env, but masked as [secure] in the log (repeatable)', collect, [])
    .option('--timeout <seconds>', 'wall-clock limit (default 3000)')
    .option('--silence-timeout <seconds>', 'end the job when it prints nothing for this long (default 600)')
    .option('--memory <MiB>', 'memory limit in MiB, swap included (default 2048)')
    .option('--cpus <n>', 'CPU limit, fractions allowed (default 2)')
    .option('--pids <n>', 'process and thread limit (default 1024)')
    .option('--disk <MiB>', 'limit on what the job writes, in MiB (default 4096)')
    .option('--priority <n>', '1 (first) to 10 (last); default 5')
    .option(
      '--network <mode>',
      'none (default: only loopback) or egress (outbound only, with DNS and the package cache)',
    )
    .option('--script-file <file>', 'read the script from this file instead of the words after --')
    .option('--label <key=value>', 'label for listing (repeatable)', collect, [])
    .option(
      '--git <url>',
      "the job's source: a remote https or git URL, fetched on the worker's host into the build directory",
    )
    .option('--ref <ref>', 'a branch or ref of --git (default its HEAD)')
    .option('--sha <sha>', 'a commit of --git (40 hex digits)')
    .option('--idempotency-key <key>', 'a retry with the same key returns the first job instead of a new one')
    .argument('[script...]', 'the script (after --); its words are joined with spaces')
    .addHelpText(
      'after',
      `${CLIENT_ENV_HELP}${LOG_ENV_HELP}

Exit codes (with --follow): the job's own code; 124 timeout, 125 errored, 130 canceled,
137 out of memory; 1 or 2 when the command itself failed (docs/operations.md).

Example:
  archway submit --arch arm64 --image busybox --memory 256 --follow -- 'uname -m'`,
    )
    .action(async (words: string[], opts: SubmitOptions) => {
      const body = await submitBody(words, opts);
      const api = apiClientFrom(env);
      const created = await api.json<{ job: JobRecord; warnings: string[] }>('POST', '/v1/jobs', {
        body,
        ...(opts.idempotencyKey ? { headers: { 'idempotency-key': opts.idempotencyKey } } : {}),
      });
      const { job, warnings } = created;
      for (const w of warnings) process.stderr.write(`archway: warning: ${w}\n`);
      if (!opts.follow) {
        await (opts.json ? outJson(created) : out(`${job.id}\n`));
        return;
      }
      process.stderr.write(`archway: job ${job.id} (${job.arch}, ${job.image})\n`);
      const end = await followJob(
        api,
        job.id,
        createLogRenderer({ color: logColor(process.stdout, env), raw: opts.raw === true }),
      );
      process.stderr.write(describeEnd(job.id, end));
      process.exitCode = exitCodeOf(end);
    });
}
