import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { type Command, Option } from 'commander';
import { ArchwayError, InvalidInputError, parseArch, parseConfig, toError } from '../../core/index.ts';
import { type ApiClient, apiClientFrom, CLIENT_ENV_HELP, ClientConfig } from '../api-client.ts';
import { createLogRenderer, LOG_ENV_HELP, logColor } from '../log-render.ts';
import { keyValues } from '../parse.ts';
import { parseSse } from '../sse.ts';
import { table } from '../table.ts';
import { makeTreeBundle } from '../tree-bundle.ts';

/** A build as `GET /v1/builds/:id` answers (the fields the CLI reads). */
interface BuildJson {
  id: string;
  number: number;
  repo: string;
  state: 'starting' | 'running' | 'passed' | 'failed' | 'canceled';
  url: string;
  event: { type: string; branch?: string };
  jobs: {
    id: string;
    number: string;
    name: string;
    arch: string;
    stage: string;
    allowFailure: boolean;
    state: string;
    durationMs?: number;
  }[];
}

const FINAL_BUILD = new Set(['passed', 'failed', 'canceled']);
const FINAL_JOB = new Set(['passed', 'failed', 'errored', 'canceled', 'skipped']);
const EVENTS = ['push', 'pull_request', 'cron', 'api'] as const;

function duration(ms: number | undefined): string {
  if (ms === undefined) return '-';
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

/** The summary table: job, arch, stage, state, duration. */
export function summaryTable(b: BuildJson): string {
  return table(
    ['JOB', 'NAME', 'ARCH', 'STAGE', 'STATE', 'DURATION'],
    b.jobs.map((j) => [
      j.number,
      j.name,
      j.arch,
      j.stage,
      `${j.state}${j.allowFailure ? ' (allowed to fail)' : ''}`,
      duration(j.durationMs),
    ]),
  );
}

/**
 * Follows one job's log over SSE and writes each complete line with `prefix`; returns when the
 * log ends or `signal` aborts.
 */
async function followPrefixed(
  client: ApiClient,
  jobId: string,
  prefix: string,
  write: (text: string) => void,
  signal: AbortSignal,
  look: { color: boolean; raw: boolean },
): Promise<void> {
  let partial = '';
  // Line by line: a marker line is dropped whole, colours go only to a terminal.
  const render = createLogRenderer(look);
  const flush = (text: string, final: boolean) => {
    partial += text;
    const lines = partial.split('\n');
    partial = final ? '' : (lines.pop() ?? '');
    const done = final ? lines.filter((l, i) => l !== '' || i < lines.length - 1) : lines;
    // Whole lines only: the renderer holds nothing back.
    const shown = done.flatMap((l) => {
      const s = render.push(`${l.replace(/\r$/, '')}\n`);
      return s ? [`${prefix} ${s}`] : [];
    });
    if (shown.length > 0) write(shown.join(''));
  };
  try {
    const res = await client.request('GET', `/v1/jobs/${encodeURIComponent(jobId)}/log`, {
      headers: { accept: 'text/event-stream' },
    });
    if (!res.body) return;
    const abort = () => res.body?.cancel().catch(() => undefined);
    signal.addEventListener('abort', abort, { once: true });
    try {
      for await (const ev of parseSse(res.body)) {
        if (ev.event === 'log') flush(JSON.parse(ev.data) as string, false);
        else if (ev.event === 'end') break;
      }
    } finally {
      signal.removeEventListener('abort', abort);
    }
  } catch (e) {
    if (!signal.aborted) write(`${prefix} archway: lost this job's log (${toError(e).message})\n`);
  } finally {
    flush('', true);
  }
}

/** Prints a build's jobs' logs live with a prefix each, until the build ends; returns the build. */
async function watchBuild(
  client: ApiClient,
  id: string,
  look: { color: boolean; raw: boolean },
): Promise<BuildJson> {
  const followed = new Map<string, Promise<void>>();
  const stop = new AbortController();
  const write = (t: string) => process.stdout.write(t);
  let b: BuildJson;
  for (;;) {
    b = await client.json<BuildJson>('GET', `/v1/builds/${encodeURIComponent(id)}`);
    for (const j of b.jobs) {
      if (followed.has(j.id) || j.state === 'waiting' || j.state === 'skipped') continue;
      followed.set(j.id, followPrefixed(client, j.id, `[${j.name}]`, write, stop.signal, look));
    }
    if (FINAL_BUILD.has(b.state)) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  // Logs of the jobs that have ended are read to their end; any still running (an allowed
  // failure under fast_finish) is left.
  const ended = b.jobs.filter((j) => FINAL_JOB.has(j.state)).map((j) => followed.get(j.id));
  const grace = setTimeout(() => stop.abort(), 10_000);
  await Promise.all(ended);
  clearTimeout(grace);
  stop.abort();
  await Promise.all(followed.values());
  return client.json<BuildJson>('GET', `/v1/builds/${encodeURIComponent(id)}`);
}

interface BuildCliOptions {
  config?: string;
  arch?: string;
  event: (typeof EVENTS)[number];
  branch?: string;
  env: string[];
  detach?: boolean;
  json?: boolean;
  raw?: boolean;
}

const collect = (value: string, previous: string[]) => [...previous, value];

/** `build [DIR]`, `build show ID`, `builds`, `restart JOB|BUILD`: builds through the API. */
export function registerBuild(program: Command, env: Record<string, string | undefined>): void {
  const client = () => apiClientFrom(env);

  const build = program
    .command('build')
    .description(
      "run DIR's .archway.yml / .travis.yml on the API's workers: its tracked files plus uncommitted changes (in a git repository, honouring .gitignore; elsewhere the directory), live logs with a prefix per job, a summary; exit 0 only when the build passed",
    )
    .argument('[dir]', 'the directory to build', '.')
    .option('--config <file>', 'the config to use instead of the tree’s .archway.yml / .travis.yml')
    .option('--arch <list>', 'only the jobs of these arches (comma separated)')
    .addOption(new Option('--event <type>', 'the event conditions see').choices(EVENTS).default('push'))
    .option('--branch <name>', 'the branch conditions see (default: the checkout’s branch)')
    .option('--env <K=V>', 'a variable for every job (repeatable)', collect, [] as string[])
    .option('--detach', 'print the build id and its URL, and return')
    .option('--json', 'print the finished build as JSON instead of the summary table')
    .option(
      '--raw',
      'the logs as stored: with their travis_fold/travis_time lines, and colour codes when not on a terminal',
    )
    .addHelpText(
      'after',
      `${CLIENT_ENV_HELP}${LOG_ENV_HELP}

Example:
  archway build . --arch amd64,arm64 --env DEBUG=1
  archway build ~/src/project --config ci/linux.yml --detach`,
    )
    .action(async (dir: string, opts: BuildCliOptions) => {
      const api = client();
      const arches = opts.arch
        ? opts.arch.split(',').map((a) => {
            const p = parseArch(a.trim());
            if (!p)
              throw new InvalidInputError('--arch', `unknown arch '${a}' (amd64, arm64, ppc64le, s390x)`);
            return p;
          })
        : undefined;
      const config = opts.config ? await readFile(opts.config, 'utf8') : undefined;
      const extraEnv = keyValues('--env', opts.env);
      const tree = await makeTreeBundle(resolve(dir));
      // The upload is its own request (a git bundle, not JSON).
      const token = parseConfig(ClientConfig, env).ARCHWAY_TOKEN;
      const res = await fetch(`${api.url}/v1/uploads`, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-git-bundle',
          ...(token ? { authorization: `Bearer ${token}` } : {}),
        },
        body: tree.bundle,
      }).catch((e: unknown) => {
        throw new ArchwayError(
          'API_UNREACHABLE',
          `cannot reach the API at ${api.url}: ${toError(e).message}`,
          {
            httpStatus: 503,
          },
        );
      });
      const text = await res.text();
      if (!res.ok) {
        let message = text;
        try {
          message = (JSON.parse(text) as { error: { message: string } }).error.message;
        } catch {
          // Not JSON: its text is the message.
        }
        throw new ArchwayError(`HTTP_${res.status}`, `upload refused (${res.status}): ${message}`, {
          httpStatus: res.status,
        });
      }
      const upload = JSON.parse(text) as { id: string };
      const branch = opts.branch ?? tree.branch;
      const created = await api.json<{ build: BuildJson; warnings: string[] }>('POST', '/v1/builds', {
        body: {
          source: { upload: upload.id },
          ...(config !== undefined ? { config } : {}),
          event: { type: opts.event, ...(branch ? { branch } : {}) },
          ...(arches ? { arches } : {}),
          ...(Object.keys(extraEnv).length > 0 ? { env: extraEnv } : {}),
        },
      });
      for (const w of created.warnings) process.stderr.write(`archway: warning: ${w}\n`);
      const b = created.build;
      if (opts.detach) {
        process.stdout.write(`${b.id}\n${b.url}\n`);
        return;
      }
      process.stderr.write(
        `archway: build #${b.number} (${b.id}) of ${tree.files} files: ${b.jobs.length} jobs\n`,
      );
      const done = await watchBuild(api, b.id, {
        color: logColor(process.stdout, env),
        raw: opts.raw === true,
      });
      process.stdout.write(opts.json ? `${JSON.stringify(done, null, 2)}\n` : `\n${summaryTable(done)}`);
      process.stderr.write(`archway: build #${done.number} ${done.state}\n`);
      process.exitCode = done.state === 'passed' ? 0 : 1;
    });

  build
    .command('show')
    .description('a build and its jobs')
    .argument('<id>', 'the build id')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `${CLIENT_ENV_HELP}

Example:
  archway build show b3f1c2d4e5f60718`,
    )
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      // `build` has --json too, and commander gives it the option: read both.
      const opts = cmd.optsWithGlobals<{ json?: boolean }>();
      const b = await client().json<BuildJson>('GET', `/v1/builds/${encodeURIComponent(id)}`);
      process.stdout.write(
        opts.json
          ? `${JSON.stringify(b, null, 2)}\n`
          : `build #${b.number} ${b.id} of ${b.repo}: ${b.state}\n${b.url}\n\n${summaryTable(b)}`,
      );
    });

  program
    .command('builds')
    .description('list builds, newest first')
    .option('--repo <name>', 'only this repository')
    .option('--branch <name>', 'only this branch')
    .option('--state <state>', 'only builds in this state')
    .option('--limit <n>', 'how many', '20')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `${CLIENT_ENV_HELP}

Example:
  archway builds --branch main --state failed`,
    )
    .action(
      async (opts: { repo?: string; branch?: string; state?: string; limit: string; json?: boolean }) => {
        const q = new URLSearchParams({ limit: opts.limit });
        if (opts.repo) q.set('repo', opts.repo);
        if (opts.branch) q.set('branch', opts.branch);
        if (opts.state) q.set('state', opts.state);
        const page = await client().json<{ builds: BuildJson[] }>('GET', `/v1/builds?${q}`);
        process.stdout.write(
          opts.json
            ? `${JSON.stringify(page, null, 2)}\n`
            : table(
                ['BUILD', 'NUMBER', 'REPO', 'BRANCH', 'STATE', 'JOBS'],
                page.builds.map((b) => [
                  b.id,
                  String(b.number),
                  b.repo,
                  b.event.branch ?? '',
                  b.state,
                  String(b.jobs.length),
                ]),
              ),
        );
      },
    );

  program
    .command('restart')
    .description(
      'run a finished build again (all its jobs, or --failed), or one finished job (of a build, or submitted alone)',
    )
    .argument('<id>', 'a build id (b...) or a job id (j...)')
    .option('--failed', 'only the jobs that did not pass (builds)')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `${CLIENT_ENV_HELP}

Example:
  archway restart b3f1c2d4e5f60718 --failed
  archway restart j0123456789abcdef01234567`,
    )
    .action(async (id: string, opts: { failed?: boolean; json?: boolean }) => {
      const api = client();
      if (id.startsWith('b')) {
        const b = await api.json<BuildJson>(
          'POST',
          `/v1/builds/${encodeURIComponent(id)}/restart${opts.failed ? '?failed=1' : ''}`,
        );
        process.stdout.write(opts.json ? `${JSON.stringify(b, null, 2)}\n` : `build ${b.id}: ${b.state}\n`);
        return;
      }
      if (opts.failed) throw new InvalidInputError('--failed', 'is for builds; a job id restarts that job');
      // The new run's id on stdout (as submit prints a job's), what it is a run of on stderr.
      const r = await api.json<{ job: string; previous: string; kind: string; build?: BuildJson }>(
        'POST',
        `/v1/jobs/${encodeURIComponent(id)}/restart`,
      );
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
        return;
      }
      process.stdout.write(`${r.job}\n`);
      process.stderr.write(
        `restarted ${r.previous} as ${r.job}${r.build ? ` (build ${r.build.id})` : r.kind === 'github-build' ? ' (its GitHub check run follows)' : ''}\n`,
      );
    });
}
