import { readFile } from 'node:fs/promises';
import { type Command, Option } from 'commander';
import { recipeToolchains } from '../../../images/index.ts';
import {
  type BuildEvent,
  ConfigError,
  configErrorText,
  EVENT_TYPES,
  type EventType,
  type ExpandedJob,
  type ExpandResult,
  expandRepoConfig,
} from '../../../webhooks/index.ts';
import { InvalidInputError } from '../../core/index.ts';
import { positiveNumber } from '../parse.ts';

interface ExpandCliOptions {
  event: EventType;
  branch?: string;
  tag?: string;
  commitMessage?: string;
  repo?: string;
  fork?: boolean;
  buildNumber?: string;
  json?: boolean;
}

async function readConfigFile(file: string): Promise<string> {
  if (file === '-') {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new InvalidInputError(
      'FILE',
      `cannot read ${file}: ${code === 'ENOENT' ? 'no such file' : String(e)}`,
    );
  }
}

function eventFrom(opts: ExpandCliOptions): BuildEvent {
  if (opts.repo !== undefined && !/^[^/\s]+\/[^/\s]+$/.test(opts.repo)) {
    throw new InvalidInputError('--repo', `expected owner/name, got '${opts.repo}'`);
  }
  const event: BuildEvent = { type: opts.event };
  // A tag push builds with the tag as its branch, as on Travis.
  const branch = opts.branch ?? opts.tag;
  if (branch !== undefined) event.branch = branch;
  if (opts.tag !== undefined) event.tag = opts.tag;
  if (opts.commitMessage !== undefined) event.commitMessage = opts.commitMessage;
  if (opts.repo !== undefined) event.repo = opts.repo;
  event.fork = opts.fork === true;
  return event;
}

function describeEvent(e: BuildEvent): string {
  const parts: string[] = [e.type];
  if (e.tag !== undefined) parts.push(`of tag ${e.tag}`);
  else if (e.branch !== undefined) parts.push(`to branch ${e.branch}`);
  else parts.push('(no --branch given)');
  if (e.repo !== undefined) parts.push(`in ${e.repo}${e.fork ? ' (a fork)' : ''}`);
  return parts.join(' ');
}

function jobBlock(job: ExpandedJob): string {
  const rows: [string, string][] = [];
  if (job.name !== undefined) rows.push(['name', job.name]);
  rows.push(['stage', job.stage]);
  rows.push(['arch', job.configArch === job.arch ? job.arch : `${job.arch} (${job.configArch})`]);
  rows.push(['image', job.image]);
  rows.push([
    'language',
    job.version ? `${job.language}, ${job.version.key} ${job.version.value}` : job.language,
  ]);
  for (const [k, v] of Object.entries(job.versions)) if (k !== job.version?.key) rows.push([k, v]);
  if (job.compiler !== undefined) rows.push(['compiler', job.compiler]);
  if (job.apt !== undefined) {
    const steps = [
      ...job.apt.sources.map((s) => `add source ${s.sourceline}${s.keyUrl ? ` (key ${s.keyUrl})` : ''}`),
      'apt-get update',
      ...(job.apt.packages.length > 0 ? [`apt-get install ${job.apt.packages.join(' ')}`] : []),
    ];
    rows.push(['addons.apt', `${steps.join('\n')}\n(before before_install; needs network egress)`]);
  }
  rows.push(['env', job.env.length > 0 ? job.env.join('\n') : '-']);
  rows.push(['allowed to fail', job.allowFailure ? 'yes' : 'no']);
  rows.push(['skipped', job.skipped ? `yes: ${job.skipReason ?? ''}` : 'no']);
  const width = Math.max(...rows.map(([k]) => k.length)) + 2;
  const lines = rows.map(([k, v]) =>
    v
      .split('\n')
      .map((line, i) => `  ${(i === 0 ? `${k}:` : '').padEnd(width)}${line}`)
      .join('\n'),
  );
  return `job ${job.number}\n${lines.join('\n')}\n`;
}

function formatExpansion(r: ExpandResult, event: BuildEvent): string {
  const out: string[] = [];
  if (!r.runs) {
    out.push(`build: does not run for ${describeEvent(event)}: ${r.reason ?? ''}\n`);
  } else {
    const running = r.jobs.filter((j) => !j.skipped).length;
    out.push(
      `build: ${r.jobs.length} job${r.jobs.length === 1 ? '' : 's'} (${running} to run) for ${describeEvent(event)}`,
      `stages: ${r.stages.join(' -> ')}${r.fastFinish ? '\nfast_finish: yes' : ''}\n`,
    );
    for (const job of r.jobs) out.push(jobBlock(job));
  }
  if (r.dropped.length > 0) {
    out.push('not in this build:');
    for (const d of r.dropped) out.push(`  ${d.job}\n    ${d.reason}`);
    out.push('');
  }
  if (r.ignored.length > 0) {
    out.push('ignored keys (archway does not run these):');
    for (const i of r.ignored) out.push(`  ${i.key} (${i.paths.join(', ')}): ${i.reason}`);
    out.push('');
  }
  if (r.warnings.length > 0) {
    out.push('warnings:');
    for (const w of r.warnings) out.push(`  ${w}`);
    out.push('');
  }
  return `${out.join('\n')}\n`;
}

export function registerConfig(program: Command, _env: Record<string, string | undefined>): void {
  const config = program
    .command('config')
    .description('check a repository config (.archway.yml or .travis.yml) before pushing it');
  config
    .command('expand')
    .description('print the jobs a config expands to for an event, without running them')
    .argument('<file>', 'the config file; - reads standard input')
    .addOption(
      new Option('--event <type>', 'the event that starts the build').choices(EVENT_TYPES).default('push'),
    )
    .option('--branch <name>', 'the branch (for a pull request: its base branch)')
    .option('--tag <name>', 'a tag push of this tag (also the branch, unless --branch is given)')
    .option('--commit-message <text>', 'the commit message conditions see')
    .option('--repo <owner/name>', 'the repository conditions see')
    .option('--fork', 'the build is of a fork')
    .option('--build-number <n>', 'the build number in job numbers', '1')
    .option('--json', 'print the expansion as JSON')
    .addHelpText(
      'after',
      `
Environment: none (it reads only the file, and no API or host).

Example:
  archway config expand .travis.yml --event pull_request --branch main`,
    )
    .action(async (file: string, opts: ExpandCliOptions) => {
      const text = await readConfigFile(file);
      const event = eventFrom(opts);
      const buildNumber = positiveNumber('--build-number', opts.buildNumber ?? '1', true);
      let result: ExpandResult;
      try {
        result = expandRepoConfig(text, event, { buildNumber, toolchains: await recipeToolchains() });
      } catch (e) {
        if (!(e instanceof ConfigError)) throw e;
        process.stderr.write(`archway: ${configErrorText(e, file)}\n`);
        process.exitCode = 2;
        return;
      }
      process.stdout.write(
        opts.json ? `${JSON.stringify({ event, ...result }, null, 2)}\n` : formatExpansion(result, event),
      );
    });
}
