import type { Arch } from '../../src/core/index.ts';
import { type AptAddon, readAddons } from './apt-addon.ts';
import { type ConditionData, checkCondition, rubyRegex } from './conditions.ts';
import { ConfigError } from './config-error.ts';
import {
  archPool,
  type ConfigArch,
  EXPANSION_KEYS,
  type JobEntry,
  type Os,
  PHASES,
  type Phase,
} from './config-schema.ts';
import { type EnvVar, envForConditions, envString } from './env-vars.ts';
import { COMPILER_LANGUAGES, DEFAULT_LANGUAGE, languageInfo } from './languages.ts';
import type { YamlValue } from './load-yaml.ts';
import type { IgnoredKey, RepoConfig, RepoSettings } from './parse-config.ts';
import { type ImageToolchain, toolchainWarnings } from './toolchain-check.ts';

/** The kinds of event a build starts from, as Travis names them (`type` in conditions). */
export const EVENT_TYPES = ['push', 'pull_request', 'cron', 'api'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** What started the build: conditions, `branches:` and the TRAVIS_* variables read it. */
export interface BuildEvent {
  type: EventType;
  /** The branch; for a pull request, its base branch; for a tag push, the tag (as Travis does). */
  branch?: string;
  /** The tag of a tag push. */
  tag?: string;
  /** The commit sha being built. */
  commit?: string;
  commitMessage?: string;
  /** The repository, `owner/name`. */
  repo?: string;
  /** True when the build's repository (for a pull request: its head repository) is a fork. */
  fork?: boolean;
  /** Login of who caused the event. */
  sender?: string;
  /** Pull request number. */
  pullRequest?: number;
  /** Pull request head: branch, repository (`owner/name`) and commit. */
  headBranch?: string;
  headRepo?: string;
  headSha?: string;
}

export interface ExpandOptions {
  /** The build's number, the first part of each job's number (`7.2`). Default 1. */
  buildNumber?: number | string;
  /** The image of jobs that name none with `image:`. Default `debian-bookworm-build`. */
  defaultImage?: string;
  /**
   * What images provide (from their recipes): a job asking for a compiler or language version its
   * image lacks gets a warning. Default: none known, no such warnings (the job's log header still
   * checks when it runs).
   */
  toolchains?: Readonly<Record<string, ImageToolchain>>;
}

/** The image a job runs in when its config names none. */
export const DEFAULT_IMAGE = 'debian-bookworm-build';

/** One job the config makes for this event. */
export interface ExpandedJob {
  /** `<build>.<n>`, in the order Travis numbers jobs (by stage, allowed failures last in each). */
  number: string;
  name?: string;
  stage: string;
  os: Os;
  /** The pool the job runs in. */
  arch: Arch;
  /** The arch as the config names it (canonical): `arm64-graviton2` runs in the arm64 pool. */
  configArch: ConfigArch;
  image: string;
  language: string;
  /** The language's main version key and its value (`python` `3.10`), when the job has one. */
  version?: { key: string; value: string };
  /** Every version key of the job's language that it sets. */
  versions: Record<string, string>;
  /** For language c and cpp. */
  compiler?: string;
  dist?: string;
  /** Global variables first, then the job's: `NAME=value` (shell text), `[secure:<id>]` for secure ones. */
  env: string[];
  /** The same variables, structured. */
  envVars: EnvVar[];
  /** The job's `if:` (it held). */
  if?: string;
  allowFailure: boolean;
  /** True for a job archway cannot run (os osx, windows, freebsd); `skipReason` says why. */
  skipped: boolean;
  skipReason?: string;
  /** The commands of each phase, language defaults applied; empty when the phase does nothing. */
  phases: Record<Phase, string[]>;
  /** `addons.apt`: packages installed (and sources added) before `before_install`. */
  apt?: AptAddon;
}

/** A job the config describes that is not in this build, and why. */
export interface DroppedJob {
  /** Where it comes from and what it is (`jobs.include[3]: stage deploy, arch arm64`). */
  job: string;
  reason: string;
}

export interface ExpandResult {
  /** False when the build's `if:` or `branches:` rules it out; then `jobs` is empty. */
  runs: boolean;
  /** Why the build does not run. */
  reason?: string;
  jobs: ExpandedJob[];
  dropped: DroppedJob[];
  /** The stages that have jobs, in the order they run; a stage runs when the one before it passed. */
  stages: string[];
  /** `jobs.fast_finish`: the build's result is known once every job not allowed to fail is done. */
  fastFinish: boolean;
  ignored: IgnoredKey[];
  warnings: string[];
  /** archway's own settings from the config's `archway:` key. */
  settings: RepoSettings;
}

/** A job while it is being expanded. */
interface Cell {
  /** Expansion keys, one value each. */
  keys: Map<string, string>;
  /** The job's own variables (without env.global); undefined when the config gives none. */
  env: EnvVar[] | undefined;
  language?: string;
  dist?: string;
  name?: string;
  stage?: string;
  if?: string;
  image?: string;
  allowFailure?: boolean;
  phases: Partial<Record<Phase, string[]>>;
  extra: Record<string, YamlValue>;
  /** `matrix` or `jobs.include[3]`. */
  origin: string;
}

const DEFAULT_STAGE = 'test';

/** Most jobs a build may have, as on Travis. */
export const MAX_JOBS = 200;
/** Most jobs the matrix may expand to before jobs.exclude removes some. */
export const MAX_MATRIX = 1000;

function entryKeys(entry: JobEntry): Map<string, string> {
  const keys = new Map<string, string>();
  const put = (k: string, v: readonly string[] | undefined) => {
    if (v?.[0] !== undefined) keys.set(k, v[0]);
  };
  put('os', entry.os);
  put('arch', entry.arch);
  put('compiler', entry.compiler);
  put('osx_image', entry.osx_image);
  for (const [k, v] of Object.entries(entry.versions)) put(k, v);
  return keys;
}

function cellFromEntry(entry: JobEntry, origin: string): Cell {
  const cell: Cell = {
    keys: entryKeys(entry),
    env: entry.env,
    phases: { ...entry.phases },
    extra: { ...entry.extra },
    origin,
  };
  if (entry.language !== undefined) cell.language = entry.language;
  if (entry.dist !== undefined) cell.dist = entry.dist;
  if (entry.name !== undefined) cell.name = entry.name;
  if (entry.stage !== undefined) cell.stage = entry.stage;
  if (entry.if !== undefined) cell.if = entry.if;
  if (entry.image !== undefined) cell.image = entry.image;
  if (entry.allowFailure !== undefined) cell.allowFailure = entry.allowFailure;
  return cell;
}

function jobLanguage(cell: Cell): string {
  return cell.language ?? DEFAULT_LANGUAGE;
}

function jobOs(cell: Cell): string {
  return cell.keys.get('os') ?? (languageInfo(jobLanguage(cell))?.defaultOsx ? 'osx' : 'linux');
}

function isLinux(os: string): boolean {
  return os === 'linux' || os === 'linux-ppc64le';
}

/** Whether a key applies to a job (Travis drops keys a job's language or os does not support). */
function supported(key: string, os: string, language: string): boolean {
  if (key === 'os') return true;
  if (key === 'arch') return isLinux(os);
  if (key === 'osx_image') return os === 'osx';
  if (key === 'compiler') return COMPILER_LANGUAGES.includes(language);
  return languageInfo(language)?.versionKeys.includes(key) ?? false;
}

function uniqVars(vars: EnvVar[]): EnvVar[] {
  const seen = new Set<string>();
  return vars.filter((v) => {
    const s = envString(v);
    if (seen.has(s)) return false;
    seen.add(s);
    return true;
  });
}

function describeCell(cell: Cell, globalEnv: readonly EnvVar[]): string {
  const parts: string[] = [];
  if (cell.name !== undefined) parts.push(`name '${cell.name}'`);
  if (cell.stage !== undefined) parts.push(`stage ${cell.stage}`);
  for (const [k, v] of cell.keys) parts.push(`${k} ${v}`);
  const own = ownEnv(cell, globalEnv);
  if (own.length > 0) parts.push(`env ${own.map(envString).join(' ')}`);
  return parts.length > 0 ? `${cell.origin}: ${parts.join(', ')}` : cell.origin;
}

/** The job's variables that are not from env.global. */
function ownEnv(cell: Cell, globalEnv: readonly EnvVar[]): EnvVar[] {
  const global = new Set(globalEnv.map(envString));
  return (cell.env ?? []).filter((v) => !global.has(envString(v)));
}

function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .filter((k) => o[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/** The values an entry gives an expansion key. */
function expansionValues(entry: JobEntry, key: string): readonly string[] | undefined {
  switch (key) {
    case 'os':
      return entry.os;
    case 'arch':
      return entry.arch;
    case 'compiler':
      return entry.compiler;
    case 'osx_image':
      return entry.osx_image;
    default:
      return entry.versions[key];
  }
}

/**
 * The jobs a validated config makes for one event, with Travis's rules: the root's expansion keys
 * multiply (os, arch, compiler, the language's version keys, then env.jobs), jobs.include adds
 * jobs that inherit the first value of each, jobs.exclude and duplicates go, `if:` conditions
 * filter jobs and stages, jobs.allow_failures marks jobs, and jobs are numbered in stage order.
 * Jobs archway cannot run (os other than linux) are kept, skipped, with the reason.
 */
export function expandMatrix(config: RepoConfig, event: BuildEvent, opts: ExpandOptions = {}): ExpandResult {
  const buildNumber = String(opts.buildNumber ?? 1);
  const defaultImage = opts.defaultImage ?? DEFAULT_IMAGE;
  const root = config.root;
  const globalEnv = config.env.global;
  const dropped: DroppedJob[] = [];
  const base = {
    fastFinish: config.fastFinish,
    ignored: config.ignored,
    warnings: [...config.warnings],
    settings: config.settings,
  };

  const eventData: ConditionData = {
    type: event.type,
    repo: event.repo,
    head_repo: event.headRepo,
    sender: event.sender,
    fork: event.fork === undefined ? undefined : String(event.fork),
    branch: event.branch,
    head_branch: event.headBranch,
    tag: event.tag,
    commit_message: event.commitMessage,
  };

  const jobData = (cell: Cell, env: readonly EnvVar[]): ConditionData => {
    const group = cell.extra.group;
    const sudo = cell.extra.sudo;
    return {
      ...eventData,
      os: jobOs(cell),
      language: jobLanguage(cell),
      dist: cell.dist,
      group: typeof group === 'string' ? group : undefined,
      sudo: typeof sudo === 'string' || typeof sudo === 'boolean' ? String(sudo) : undefined,
      env: envForConditions(env),
    };
  };

  // The build: `if:` at the root and `branches:` decide whether there is a build at all.
  const buildData: ConditionData = {
    ...eventData,
    os: root.os?.[0] ?? 'linux',
    language: root.language ?? DEFAULT_LANGUAGE,
    dist: root.dist,
    env: envForConditions(globalEnv),
  };
  if (root.if !== undefined && !checkCondition(root.if, buildData)) {
    return {
      ...base,
      runs: false,
      reason: `the build's if: ${root.if} is false`,
      jobs: [],
      dropped,
      stages: [],
    };
  }
  const branchReason = branchFilter(config, event);
  if (branchReason) return { ...base, runs: false, reason: branchReason, jobs: [], dropped, stages: [] };

  // 1. Matrix expansion: the product of the root's expansion keys (supported by its language), env.jobs last.
  const rootLanguage = root.language ?? DEFAULT_LANGUAGE;
  const rootOs = root.os ?? [];
  const axes: { key: string; values: readonly string[] }[] = [];
  for (const key of EXPANSION_KEYS) {
    const values = expansionValues(root, key);
    if (!values || values.length === 0) continue;
    if (key === 'arch' && rootOs.length > 0 && !rootOs.some(isLinux)) continue;
    if (key === 'osx_image' && !rootOs.includes('osx')) continue;
    if (key !== 'os' && key !== 'arch' && key !== 'osx_image' && !supported(key, 'linux', rootLanguage))
      continue;
    axes.push({ key, values });
  }
  const envJobs = config.env.jobs && config.env.jobs.length > 0 ? config.env.jobs : undefined;

  const shared = (): Cell => {
    // The root's if: is the build's, already applied; its env is env.global / env.jobs.
    const cell: Cell = {
      keys: new Map(),
      env: undefined,
      phases: { ...root.phases },
      extra: { ...root.extra },
      origin: 'matrix',
    };
    if (root.language !== undefined) cell.language = root.language;
    if (root.dist !== undefined) cell.dist = root.dist;
    if (root.name !== undefined) cell.name = root.name;
    if (root.stage !== undefined) cell.stage = root.stage;
    if (root.image !== undefined) cell.image = root.image;
    return cell;
  };

  const product = axes.reduce((n, a) => n * a.values.length, envJobs ? envJobs.length : 1);
  if (product > MAX_MATRIX) {
    throw new ConfigError(
      `the matrix expands to ${product} jobs before jobs.exclude; the limit is ${MAX_MATRIX} (Travis runs at most ${MAX_JOBS} jobs per build)`,
    );
  }
  let cells: Cell[] = [];
  if (axes.length > 0 || envJobs) {
    let rows: { keys: Map<string, string>; env?: EnvVar[] }[] = [{ keys: new Map() }];
    for (const axis of axes) {
      rows = rows.flatMap((r) => axis.values.map((v) => ({ keys: new Map([...r.keys, [axis.key, v]]) })));
    }
    if (envJobs) rows = rows.flatMap((r) => envJobs.map((env) => ({ ...r, env })));
    cells = rows.map((r) => {
      const cell = shared();
      cell.keys = r.keys;
      cell.env = r.env;
      return cell;
    });
  }

  // 2. jobs.include. When the root makes exactly one job (every expansion key has one value)
  //    and there are includes, Travis drops that job: it is taken for a leftover of the includes.
  const included = config.include.map((entry, i) => cellFromEntry(entry, `jobs.include[${i}]`));
  let previousStage: string | undefined;
  for (const cell of included) {
    if (cell.stage === undefined && previousStage !== undefined) cell.stage = previousStage;
    previousStage = cell.stage;
  }
  if (cells.length === 1 && included.length > 0) {
    dropped.push({
      job: describeCell(cells[0] as Cell, globalEnv),
      reason:
        'the root job does not run: every expansion key at the root has one value and jobs.include is not empty (as Travis does)',
    });
    cells = [];
  } else if (cells.length === 0 && included.length > 0) {
    dropped.push({
      job: 'matrix',
      reason:
        'the root makes no job of its own: it has no expansion key (os, arch, env.jobs, a version key, ...) and jobs.include is not empty (as Travis does)',
    });
  }

  // 3. Shared keys: what the root sets and an include does not (phases, language, image, ...).
  for (const cell of included) {
    if (cell.language === undefined && root.language !== undefined) cell.language = root.language;
    if (cell.dist === undefined && root.dist !== undefined) cell.dist = root.dist;
    if (cell.name === undefined && root.name !== undefined) cell.name = root.name;
    if (cell.stage === undefined && root.stage !== undefined) cell.stage = root.stage;
    if (cell.image === undefined && root.image !== undefined) cell.image = root.image;
    for (const p of PHASES) {
      const cmds = root.phases[p];
      if (cell.phases[p] === undefined && cmds !== undefined) cell.phases[p] = cmds;
    }
    cell.extra = { ...root.extra, ...cell.extra };
  }
  cells = [...cells, ...included];
  if (cells.length === 0) cells = [shared()];

  // 4. Includes inherit the first value of each expansion key at the root, and the first env.jobs entry.
  for (const cell of cells) {
    for (const axis of axes) if (!cell.keys.has(axis.key)) cell.keys.set(axis.key, axis.values[0] as string);
    if (cell.env === undefined && envJobs) cell.env = envJobs[0];
  }
  const fullEnv = (cell: Cell) => uniqVars([...globalEnv, ...(cell.env ?? [])]);

  // 5. jobs.exclude (each with its own if:).
  cells = cells.filter((cell) => {
    const i = config.exclude.findIndex(
      (ex) =>
        matches(ex, cell, globalEnv, event) &&
        (ex.if === undefined || checkCondition(ex.if, jobData(cell, fullEnv(cell)))),
    );
    if (i < 0) return true;
    dropped.push({ job: describeCell(cell, globalEnv), reason: `matches jobs.exclude[${i}]` });
    return false;
  });

  // 6. Keys a job's os or language does not support are dropped; jobs that became identical collapse.
  for (const cell of cells) {
    const os = jobOs(cell);
    const language = jobLanguage(cell);
    for (const key of [...cell.keys.keys()]) if (!supported(key, os, language)) cell.keys.delete(key);
  }
  const seen = new Set<string>();
  cells = cells.filter((cell) => {
    const key = canonicalJson({
      keys: [...cell.keys].sort(),
      env: fullEnv(cell).map(envString),
      language: cell.language,
      dist: cell.dist,
      name: cell.name,
      stage: cell.stage ?? DEFAULT_STAGE,
      if: cell.if,
      image: cell.image,
      allowFailure: cell.allowFailure,
      phases: cell.phases,
      extra: cell.extra,
    });
    if (!seen.has(key)) {
      seen.add(key);
      return true;
    }
    dropped.push({
      job: describeCell(cell, globalEnv),
      reason: 'identical to an earlier job (once the keys its os or language does not use are dropped)',
    });
    return false;
  });

  // 7. Job conditions.
  cells = cells.filter((cell) => {
    if (cell.if === undefined || checkCondition(cell.if, jobData(cell, fullEnv(cell)))) return true;
    dropped.push({ job: describeCell(cell, globalEnv), reason: `if: ${cell.if} is false` });
    return false;
  });

  // 8. Stages: a job without one takes the stage of the job before it (the first: `test`).
  const declared = config.stages;
  const defaultStage = declared.find((s) => s.name.toLowerCase() === DEFAULT_STAGE)?.name ?? DEFAULT_STAGE;
  let stage = defaultStage;
  const stageOf = new Map<Cell, string>();
  for (const cell of cells) {
    stage = cell.stage ?? stage;
    stageOf.set(cell, stage);
  }
  const stageList: { name: string; if?: string }[] = [];
  for (const s of [...declared, ...cells.map((c) => ({ name: stageOf.get(c) as string }))]) {
    if (!stageList.some((x) => x.name.toLowerCase() === s.name.toLowerCase())) stageList.push(s);
  }
  const jobsOn = (name: string) =>
    cells.filter((c) => (stageOf.get(c) as string).toLowerCase() === name.toLowerCase());
  const stages = stageList.filter((s) => {
    const on = jobsOn(s.name);
    if (on.length === 0) return false;
    const cond = s.if;
    if (cond === undefined || on.some((c) => checkCondition(cond, jobData(c, fullEnv(c))))) return true;
    for (const c of on) {
      dropped.push({
        job: describeCell(c, globalEnv),
        reason: `stage ${s.name} does not run: its if: ${cond} is false`,
      });
    }
    return false;
  });
  const stageIndex = (c: Cell) =>
    stages.findIndex((s) => s.name.toLowerCase() === (stageOf.get(c) as string).toLowerCase());
  cells = cells.filter((c) => stageIndex(c) >= 0);

  // 9. Allowed failures: include entries with allow_failure: true, and jobs matching jobs.allow_failures.
  const allowed = new Map<Cell, boolean>();
  for (const cell of cells) {
    const byEntry = config.allowFailures.some(
      (af) =>
        matches(af, cell, globalEnv, event, stageOf.get(cell)) &&
        (af.if === undefined || checkCondition(af.if, jobData(cell, fullEnv(cell)))),
    );
    allowed.set(cell, cell.allowFailure === true || byEntry);
  }

  // 10. Order: by stage, then jobs not allowed to fail first, then as written; then numbered.
  const ordered = cells
    .map((cell, i) => ({ cell, i }))
    .sort(
      (a, b) =>
        stageIndex(a.cell) - stageIndex(b.cell) ||
        Number(allowed.get(a.cell)) - Number(allowed.get(b.cell)) ||
        a.i - b.i,
    )
    .map((x) => x.cell);

  if (ordered.length > MAX_JOBS) {
    throw new ConfigError(
      `the config makes ${ordered.length} jobs; a build has at most ${MAX_JOBS} (as on Travis)`,
    );
  }
  const jobs = ordered.map((cell, i) =>
    toJob(cell, {
      number: `${buildNumber}.${i + 1}`,
      stage: stages[stageIndex(cell)]?.name ?? DEFAULT_STAGE,
      allowFailure: allowed.get(cell) === true,
      env: fullEnv(cell),
      defaultImage,
    }),
  );
  if (opts.toolchains !== undefined) base.warnings.push(...toolchainWarnings(jobs, opts.toolchains));
  return { ...base, runs: true, jobs, dropped, stages: stages.map((s) => s.name) };
}

/** Whether a jobs.exclude / jobs.allow_failures entry matches a job: every key it gives is equal. */
function matches(
  entry: JobEntry,
  cell: Cell,
  globalEnv: readonly EnvVar[],
  event: BuildEvent,
  stage?: string,
): boolean {
  const single = (values: readonly string[] | undefined, actual: string | undefined) =>
    values === undefined || (values.length === 1 && values[0] === actual);
  if (!single(entry.os, cell.keys.get('os') ?? (entry.os ? jobOs(cell) : undefined))) return false;
  if (!single(entry.arch, cell.keys.get('arch'))) return false;
  if (!single(entry.compiler, cell.keys.get('compiler'))) return false;
  if (!single(entry.osx_image, cell.keys.get('osx_image'))) return false;
  for (const [k, v] of Object.entries(entry.versions)) if (!single(v, cell.keys.get(k))) return false;
  if (entry.language !== undefined && entry.language !== jobLanguage(cell)) return false;
  for (const k of ['dist', 'name', 'image'] as const) {
    if (entry[k] !== undefined && entry[k] !== cell[k]) return false;
  }
  if (entry.stage !== undefined) {
    const jobStage = (stage ?? cell.stage ?? DEFAULT_STAGE).toLowerCase();
    if (entry.stage.toLowerCase() !== jobStage) return false;
  }
  if (entry.allowFailure !== undefined && entry.allowFailure !== (cell.allowFailure ?? false)) return false;
  for (const p of PHASES) {
    const cmds = entry.phases[p];
    if (cmds !== undefined && !sameStrings(cmds, cell.phases[p] ?? [])) return false;
  }
  for (const [k, v] of Object.entries(entry.extra)) {
    if (k === 'branch') {
      if (typeof v !== 'string' || v !== event.branch) return false;
      continue;
    }
    if (canonicalJson(v) !== canonicalJson(cell.extra[k])) return false;
  }
  if (entry.env !== undefined) {
    // The entry's variables must be the job's own, give or take those of env.global
    // (Travis compares after env.global was merged in).
    const want = new Set(entry.env.filter((v) => !v.secure).map(envString));
    const global = new Set(globalEnv.map(envString));
    const own = ownEnv(cell, globalEnv)
      .filter((v) => !v.secure)
      .map(envString);
    if (!own.every((s) => want.has(s))) return false;
    for (const s of want) if (!own.includes(s) && !global.has(s)) return false;
  }
  return true;
}

/** Whether `branches:` rules the build out: the reason, or undefined. */
function branchFilter(config: RepoConfig, event: BuildEvent): string | undefined {
  const b = config.branches;
  if (!b) return undefined;
  const branch = event.branch;
  const hit = (patterns: readonly string[]) =>
    branch !== undefined &&
    patterns.some((p) => {
      const re = /^\/(.*)\/$/s.exec(p);
      return re ? rubyRegex(re[1] ?? '').test(branch) : p === branch;
    });
  const shown = branch === undefined ? 'no branch given' : `branch ${branch}`;
  if (b.only && !hit(b.only)) return `${shown}: not in branches.only (${b.only.join(', ')})`;
  if (b.except && hit(b.except)) return `${shown}: in branches.except (${b.except.join(', ')})`;
  return undefined;
}

function defaultPhase(language: string, phase: Phase): string[] | undefined {
  const info = languageInfo(language);
  if (phase === 'install') return info ? [...(info.install ?? [])] : [];
  if (phase === 'script') return info?.script ? [...info.script] : undefined;
  return [];
}

/** The command a job without `script:` runs when its language has no default script: it fails, saying so. */
export function noScriptCommand(language: string): string {
  return `echo 'archway: no script: for language ${language}, and archway knows no default script for it; set script: in the config' >&2; false`;
}

function toJob(
  cell: Cell,
  o: { number: string; stage: string; allowFailure: boolean; env: EnvVar[]; defaultImage: string },
): ExpandedJob {
  const language = jobLanguage(cell);
  const info = languageInfo(language);
  const rawOs = jobOs(cell);
  const os: Os = rawOs === 'linux-ppc64le' ? 'linux' : (rawOs as Os);
  const configArch = (cell.keys.get('arch') ??
    (rawOs === 'linux-ppc64le' ? 'ppc64le' : 'amd64')) as ConfigArch;
  const versions: Record<string, string> = {};
  for (const key of info?.versionKeys ?? []) {
    const v = cell.keys.get(key);
    if (v !== undefined) versions[key] = v;
  }
  const phases = {} as Record<Phase, string[]>;
  for (const p of PHASES) {
    phases[p] = cell.phases[p] ?? defaultPhase(language, p) ?? [noScriptCommand(language)];
  }
  const job: ExpandedJob = {
    number: o.number,
    stage: o.stage,
    os,
    arch: archPool(configArch),
    configArch,
    image: cell.image ?? o.defaultImage,
    language,
    versions,
    env: o.env.map(envString),
    envVars: o.env,
    allowFailure: o.allowFailure,
    skipped: os !== 'linux',
    phases,
  };
  if (os !== 'linux') job.skipReason = `os: ${os} jobs are not run: archway runs linux jobs only`;
  const mainKey = info?.versionKeys.find((k) => versions[k] !== undefined);
  if (mainKey !== undefined) job.version = { key: mainKey, value: versions[mainKey] as string };
  const compiler = cell.keys.get('compiler');
  if (compiler !== undefined) job.compiler = compiler;
  if (cell.name !== undefined) job.name = cell.name;
  if (cell.dist !== undefined) job.dist = cell.dist;
  if (cell.if !== undefined) job.if = cell.if;
  // Checked by parseConfig already (a bad value is a ConfigError there, at its line).
  const apt = readAddons(cell.extra.addons, ['addons']).apt;
  if (apt !== undefined) job.apt = apt;
  return job;
}
