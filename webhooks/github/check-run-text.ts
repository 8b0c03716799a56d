import type { BuildRecord, BuildSlot } from '../../queue/index.ts';
import type { BuildEvent, ConfigError, ExpandedJob, IgnoredKey } from '../repo-config/index.ts';
import type { CheckRunUpdate } from './check-runs.ts';

/*
 * What check runs say, as pure functions of a build (no I/O): names, summaries, the config error.
 */

/** A build of the GitHub App: its slots hold expanded jobs, its event is a BuildEvent. */
export type GitHubBuild = BuildRecord<ExpandedJob, BuildEvent>;
export type GitHubSlot = BuildSlot<ExpandedJob>;

export const CANCEL_ACTION: CheckRunUpdate['actions'] = [
  { label: 'Cancel', identifier: 'cancel', description: 'Cancel this job' },
];

export function short(sha: string): string {
  return sha.slice(0, 7);
}

/** `push to main`, `pull request #5 (feature -> main)`, `tag v1.2`. */
export function describeEvent(e: BuildEvent): string {
  if (e.type === 'pull_request')
    return `pull request #${e.pullRequest ?? '?'} (${e.headRepo && e.headRepo !== e.repo ? `${e.headRepo}:` : ''}${e.headBranch ?? '?'} -> ${e.branch ?? '?'})`;
  if (e.tag) return `tag ${e.tag}`;
  return `${e.type} to ${e.branch ?? '?'}`;
}

/** A check run's name: the job's name, else its arch and variables; the stage when the build has several. */
export function checkName(job: ExpandedJob, multiStage: boolean): string {
  const what =
    job.name ??
    [
      ...(job.os !== 'linux' ? [job.os] : []),
      job.configArch !== job.arch ? job.configArch : job.arch,
      job.image,
      ...job.env.slice(0, 4),
    ].join(' ');
  return `archway: ${multiStage ? `${job.stage} / ` : ''}${what}`.slice(0, 200);
}

/** The Markdown of the keys archway ignored and the expansion's warnings, added to every summary. */
export function ignoredNotes(ignored: IgnoredKey[], warnings: string[]): string {
  const parts: string[] = [];
  if (ignored.length > 0) {
    parts.push(
      '### Ignored keys\n\narchway reads these keys but does not act on them:\n\n' +
        ignored
          .map((i) => `- \`${i.key}\` (${i.paths.map((p) => `\`${p}\``).join(', ')}): ${i.reason}`)
          .join('\n'),
    );
  }
  if (warnings.length > 0) parts.push(`### Warnings\n\n${warnings.map((w) => `- ${w}`).join('\n')}`);
  return parts.join('\n\n');
}

/** A job check run's summary: which job of which build, `line`, the log's address, the build's notes. */
export function jobSummary(b: GitHubBuild, slot: GitHubSlot, line: string, logUrl: string): string {
  const job = slot.job;
  const head = [
    `**Job ${job.number}** of build #${b.number}: ${describeEvent(b.event)} at \`${short(b.sha)}\``,
    `${job.arch}${job.configArch !== job.arch ? ` (\`arch: ${job.configArch}\`)` : ''}, image \`${job.image}\`, stage \`${job.stage}\`${slot.allowFailure ? ', allowed to fail' : ''}${job.env.length ? `, env \`${job.env.join(' ')}\`` : ''}`,
    line,
    `Log: ${logUrl}`,
  ].join('\n\n');
  return b.notes ? `${head}\n\n${b.notes}` : head;
}

/** The one failed check run of a config that does not parse: where, what, and the line with a caret. */
export function configErrorUpdate(path: string, err: ConfigError, now: string): CheckRunUpdate {
  const where =
    err.line !== undefined ? `${path}, line ${err.line}${err.column ? `, column ${err.column}` : ''}` : path;
  const excerpt =
    err.excerpt !== undefined && err.line !== undefined
      ? `\n\n\`\`\`yaml\n${err.line} | ${err.excerpt}\n${' '.repeat(String(err.line).length + 3 + Math.max(0, (err.column ?? 1) - 1))}^\n\`\`\``
      : '';
  return {
    status: 'completed',
    conclusion: 'failure',
    completedAt: now,
    title: `${path} is not valid: nothing was built`,
    summary: `**${where}**: ${err.keyPath ? `\`${err.keyPath}\`: ` : ''}${err.detail}${excerpt}\n\nThe config format: docs/repo-config.md.`,
  };
}
