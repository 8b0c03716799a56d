import type { ExpandedJob } from './expand-matrix.ts';
import { isPlainVersion, languageInfo, VERSION_PROBES, versionMatches } from './languages.ts';
import { compilerVars } from './phases.ts';

/**
 * What an image provides, as its recipe declares it (`provides:` in images/recipes/*.yml): the
 * commands on its PATH that jobs ask for by name, and the version of each language it has.
 */
export interface ImageToolchain {
  /** Commands (`gcc`, `clang-14`, `python3`, ...). */
  commands: readonly string[];
  /** Version key -> the version the image has (`python: 3.11.2`). */
  versions: Readonly<Record<string, string>>;
}

/**
 * Warnings for what jobs ask of their image that it does not have: a `compiler:` (its CC or CXX),
 * a language version, a language whose toolchain is missing. Only jobs whose image is in
 * `toolchains` are checked (the job's log header checks every job again when it runs). One
 * warning per problem, naming every job that has it.
 */
export function toolchainWarnings(
  jobs: readonly ExpandedJob[],
  toolchains: Readonly<Record<string, ImageToolchain>>,
): string[] {
  const byProblem = new Map<string, string[]>();
  const add = (problem: string, job: ExpandedJob) => {
    const list = byProblem.get(problem) ?? [];
    list.push(job.number);
    byProblem.set(problem, list);
  };
  for (const job of jobs) {
    if (job.skipped) continue;
    const tc = toolchains[job.image];
    if (tc === undefined) continue;
    const has = (cmd: string) => tc.commands.includes(cmd) || (job.apt?.packages ?? []).includes(cmd);
    if (job.language === 'c' || job.language === 'cpp') {
      const vars = new Map(compilerVars(job.language, job.compiler ?? 'gcc'));
      for (const v of job.language === 'cpp' ? ['CC', 'CXX'] : ['CC']) {
        const cmd = vars.get(v);
        if (cmd !== undefined && !has(cmd)) {
          add(
            `compiler ${job.compiler ?? 'gcc'}: image ${job.image} has no ${cmd} (${v}); the job errors when it announces it. The image has: ${compilersOf(tc).join(', ') || 'no C compiler'}`,
            job,
          );
        }
      }
    }
    const info = languageInfo(job.language);
    const main = info?.versionKeys[0];
    for (const key of new Set([...Object.keys(job.versions), ...(main !== undefined ? [main] : [])])) {
      const probe = VERSION_PROBES[key];
      if (probe === undefined) continue;
      const want = job.versions[key];
      if (!has(probe.command)) {
        add(
          want === undefined
            ? `language ${job.language}: image ${job.image} has no ${probe.command}`
            : `${key} ${want}: image ${job.image} has no ${probe.command}`,
          job,
        );
        continue;
      }
      const have = tc.versions[key];
      if (want === undefined || have === undefined) continue;
      if (!isPlainVersion(want)) {
        add(
          `${key} ${want}: archway installs no language versions; image ${job.image} has ${probe.command} ${have}`,
          job,
        );
      } else if (!versionMatches(want, have)) {
        add(`${key} ${want}: image ${job.image} has ${probe.command} ${have}, not ${want}`, job);
      }
    }
  }
  return [...byProblem].map(
    ([problem, numbers]) => `job${numbers.length > 1 ? 's' : ''} ${numbers.join(', ')}: ${problem}`,
  );
}

function compilersOf(tc: ImageToolchain): string[] {
  return tc.commands.filter((c) => /^(gcc|g\+\+|clang|clang\+\+|cc|c\+\+)(-[\d.]+)?$/.test(c));
}
