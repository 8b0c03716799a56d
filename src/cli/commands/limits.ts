import type { Command } from 'commander';
import { InvalidInputError } from '../../core/light.ts';
import { apiClientFrom, CLIENT_ENV_HELP } from '../api-client.ts';
import { out, outJson } from '../output.ts';
import { table } from '../table.ts';

/** A group as the limits routes return it. */
interface GroupRow {
  group: string;
  concurrency: number | null;
  own: boolean;
  running: number;
  waiting: number;
}

function rows(list: GroupRow[]): string {
  return table(
    ['GROUP', 'CAP', 'RUNNING', 'HELD'],
    list.map((g) => [
      g.group,
      g.concurrency === null ? 'none' : `${g.concurrency}${g.own ? '' : ' (default)'}`,
      String(g.running),
      String(g.waiting),
    ]),
  );
}

/** `owner/name` is a repository, `key=value` a label: the route of its cap. Pure. */
export function limitPath(target: string): { path: string; repo: boolean } {
  const eq = target.indexOf('=');
  if (eq > 0) {
    const key = target.slice(0, eq);
    const value = target.slice(eq + 1);
    if (key === 'repo') return limitPath(value);
    return { path: `/v1/labels/${encodeURIComponent(key)}/${encodeURIComponent(value)}/limits`, repo: false };
  }
  const m = /^([A-Za-z0-9_.-]+)\/([A-Za-z0-9_.-]+)$/.exec(target);
  if (!m)
    throw new InvalidInputError(
      'TARGET',
      `expected owner/name (a repository) or key=value (a label), got '${target}'`,
    );
  return { path: `/v1/repos/${m[1]}/${m[2]}/limits`, repo: true };
}

/** `archway limits` (the concurrency caps and their load) and `archway limits set TARGET N`. */
export function registerLimits(program: Command, env: Record<string, string | undefined>): void {
  const api = () => apiClientFrom(env);
  const limits = program
    .command('limits')
    .description('list the concurrency caps per repository and label: cap, running and held jobs')
    .option('--json', 'print {"repoDefault": N, "groups": [...]} as the API returns them')
    .addHelpText(
      'after',
      `${CLIENT_ENV_HELP}

Example:
  archway limits`,
    )
    .action(async (opts: { json?: boolean }) => {
      const answer = await api().json<{ repoDefault: number | null; groups: GroupRow[] }>(
        'GET',
        '/v1/limits',
      );
      if (opts.json) return outJson(answer);
      await out(
        `repositories' default: ${answer.repoDefault ?? 'none'} (ARCHWAY_REPO_CONCURRENCY on the API)\n${answer.groups.length ? rows(answer.groups) : ''}`,
      );
    });
  limits
    .command('set')
    .description(
      "set a repository's or a label's cap: jobs of it that run at once (the others wait, holding no slot)",
    )
    .argument('<target>', 'owner/name (a repository) or key=value (a label)')
    .argument(
      '<n>',
      'a number of jobs (1 or more); `default` returns a repository to the default, `none` removes a cap',
    )
    .option('--json', 'print the group as the API returns it')
    .addHelpText(
      'after',
      `${CLIENT_ENV_HELP}

Example:
  archway limits set octo/big 8
  archway limits set team=infra 1
  archway limits set octo/big default`,
    )
    .action(async (target: string, n: string, opts: { json?: boolean }) => {
      const { path } = limitPath(target);
      let concurrency: number | null;
      if (n === 'default' || n === 'none') concurrency = null;
      else if (/^\d+$/.test(n.trim()) && Number(n) >= 1) concurrency = Number(n);
      else
        throw new InvalidInputError(
          'N',
          `expected a number of jobs (1 or more), default or none, got '${n}'`,
        );
      const group = await api().json<GroupRow>('PUT', path, { body: { concurrency } });
      await (opts.json ? outJson(group) : out(rows([group])));
    });
}
