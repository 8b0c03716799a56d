import type { z } from 'zod';
import { AddonIssue, readAddons } from './apt-addon.ts';
import {
  type BranchesConfig,
  describeValue,
  type JobEntry,
  RootSchema,
  type StageConfig,
} from './config-schema.ts';
import type { RootEnv } from './env-vars.ts';
import {
  COMPILER_LANGUAGES,
  DEFAULT_LANGUAGE,
  LANGUAGE_OPTION_KEYS,
  languageInfo,
  VERSION_KEYS,
} from './languages.ts';
import {
  formatKeyPath,
  type KeyPath,
  loadYaml,
  type SourceMap,
  type YamlLimits,
  type YamlValue,
} from './load-yaml.ts';

/** A key archway reads but does not act on, with why, and where it was written. */
export interface IgnoredKey {
  /** The key's name (`addons`, `services`, `dist`, ...). */
  key: string;
  reason: string;
  /** Every place it was written (`services`, `jobs.include[3].services`). */
  paths: string[];
}

/** archway's own settings for a repository: the `archway:` key at the root of the config. */
export interface RepoSettings {
  /** `archway: { auto_cancel: false }`: a newer push does not cancel this branch's or pull request's older build. Unset: the server's default. */
  autoCancel?: boolean;
}

/** A validated repository config, before expansion. */
export interface RepoConfig {
  /** The root's job settings (language, os, arch, phases, ...). */
  root: JobEntry;
  env: RootEnv;
  include: JobEntry[];
  exclude: JobEntry[];
  allowFailures: JobEntry[];
  fastFinish: boolean;
  /** Stages as declared under `stages:`, in order. */
  stages: StageConfig[];
  branches?: BranchesConfig;
  ignored: IgnoredKey[];
  warnings: string[];
  settings: RepoSettings;
}

export interface ParseConfigOptions {
  /** Limits against YAML bombs; see DEFAULT_YAML_LIMITS. */
  limits?: YamlLimits;
}

const REASONS: Readonly<Record<string, string>> = {
  services: 'services are not started; start what the job needs in before_install or before_script',
  deploy: 'deployments are not run',
  notifications: 'notifications are not sent; archway reports through GitHub check runs',
  cache: 'there is no build cache between jobs',
  before_cache: 'runs only to save a build cache, which archway does not keep',
  before_deploy: 'runs only before a deployment, which archway does not run',
  after_deploy: 'runs only after a deployment, which archway does not run',
  sudo: 'has no effect: a job runs as root in its own container',
  dist: 'a job runs in its archway image (default debian-bookworm-build), not in a Travis Ubuntu VM',
  group: 'selects a Travis VM image group',
  virt: 'has no effect: archway runs every job in a container',
  vm: 'selects a Travis VM size',
  osx_image: 'macOS jobs are not run',
  git: 'checkout options (depth, submodules, ...) are not applied',
  import: 'shared config imports are not fetched: only this file is read',
  version: 'has no effect',
  conditions: 'archway evaluates conditions v1 only',
  filter_secrets: 'a Travis-internal option',
  trace: 'a Travis-internal option',
  stack: 'selects a Travis build environment',
  keep_netrc: 'no .netrc is written',
  workspaces: 'workspaces are not shared between jobs',
  branch: 'allow_failures.branch: use if: branch = NAME instead',
};

const LANGUAGE_OPTION_REASON = 'a language set-up option; archway does not set up language toolchains';

function isMapping(v: YamlValue | undefined): v is { [key: string]: YamlValue } {
  return v !== null && v !== undefined && typeof v === 'object' && !Array.isArray(v);
}

class Collector {
  readonly #byKey = new Map<string, IgnoredKey>();

  add(key: string, reason: string, path: KeyPath): void {
    const id = `${key}\u0000${reason}`;
    let entry = this.#byKey.get(id);
    if (!entry) {
      entry = { key, reason, paths: [] };
      this.#byKey.set(id, entry);
    }
    entry.paths.push(formatKeyPath(path));
  }

  list(): IgnoredKey[] {
    return [...this.#byKey.values()];
  }
}

/** What a document at hand needs to turn a problem into a ConfigError at its line. */
interface ErrorSite {
  source: SourceMap;
  doc: YamlValue;
}

/**
 * Lists what an entry sets that archway does not run. `addons` is read here (its apt part runs:
 * see apt-addon.ts), so a package name that is not one is a ConfigError at its line.
 */
function collectIgnored(
  entry: JobEntry,
  at: KeyPath,
  language: string,
  out: Collector,
  site: ErrorSite,
): void {
  const info = languageInfo(language);
  for (const [key, value] of Object.entries(entry.extra)) {
    if (key === 'addons') {
      try {
        for (const i of readAddons(value, [...at, key]).ignored) out.add(i.key, i.reason, i.path);
      } catch (e) {
        if (!(e instanceof AddonIssue)) throw e;
        throw site.source.error(documentPath(e.path, site.doc), e.detail);
      }
      continue;
    }
    const reason =
      REASONS[key] ??
      (LANGUAGE_OPTION_KEYS.includes(key) ? LANGUAGE_OPTION_REASON : 'not a Travis key; ignored');
    out.add(key, reason, [...at, key]);
  }
  if (entry.dist !== undefined) out.add('dist', REASONS.dist as string, [...at, 'dist']);
  if (entry.osx_image !== undefined && !(entry.os ?? []).includes('osx')) {
    out.add('osx_image', 'applies to os: osx only', [...at, 'osx_image']);
  }
  if (entry.compiler !== undefined && !COMPILER_LANGUAGES.includes(language)) {
    out.add('compiler', `applies to language c and cpp only, not ${language}`, [...at, 'compiler']);
  }
  for (const key of Object.keys(entry.versions)) {
    if (!info?.versionKeys.includes(key)) {
      out.add(key, `not a version key of language ${language}`, [...at, key]);
    }
  }
}

/** The keys of an include entry that must hold one value: an entry is one job. */
const SINGLE_VALUE_KEYS = ['os', 'arch', 'compiler', 'osx_image'] as const;

function checkSingleValues(entry: JobEntry, at: KeyPath, source: SourceMap, doc: YamlValue): void {
  for (const key of SINGLE_VALUE_KEYS) {
    const values = entry[key];
    if (values && values.length > 1) {
      throw source.error(
        documentPath([...at, key], doc),
        `an entry of jobs.include is one job and takes one ${key}, got ${values.join(', ')}: write one entry per ${key}`,
      );
    }
  }
  for (const [key, values] of Object.entries(entry.versions)) {
    if (values.length > 1) {
      throw source.error(
        documentPath([...at, key], doc),
        `an entry of jobs.include is one job and takes one ${key} value, got ${values.join(', ')}: write one entry per value`,
      );
    }
  }
}

/**
 * The path of a value in the document, from a path in the validated shape: where the document
 * wrote one value for a list (`script: make`, `include: {...}`), or a bare list for `jobs:`, the
 * validated path has a segment the document does not.
 */
function documentPath(path: KeyPath, doc: YamlValue): KeyPath {
  const out: (string | number)[] = [];
  let node: YamlValue | undefined = doc;
  for (const seg of path) {
    if (Array.isArray(node)) {
      if (typeof seg === 'number') {
        out.push(seg);
        node = node[seg];
        continue;
      }
      if (seg === 'include') continue;
      break;
    }
    if (isMapping(node)) {
      if (typeof seg === 'number') {
        if (seg === 0) continue;
        break;
      }
      out.push(seg);
      node = node[seg];
      continue;
    }
    if (typeof seg === 'number' && seg === 0) continue;
    out.push(seg);
    break;
  }
  return out;
}

function zodError(error: z.ZodError, source: SourceMap, doc: YamlValue) {
  const issue = error.issues[0];
  if (!issue) return source.error([], 'invalid config');
  let raw = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
  let message = issue.message;
  if (issue.code === 'invalid_type' && 'input' in issue) {
    message = `expected ${issue.expected}, got ${describeValue(issue.input)}`;
  }
  if (issue.code === 'unrecognized_keys' && issue.keys[0] !== undefined) {
    raw = [...raw, issue.keys[0]];
    message = `unknown key '${issue.keys[0]}'`;
  }
  return source.error(documentPath(raw, doc), message);
}

/** `archway:` at the root: archway's own settings (`auto_cancel`). */
function readSettings(value: YamlValue | undefined, source: SourceMap): RepoSettings {
  if (value === undefined || value === null) return {};
  if (!isMapping(value))
    throw source.error(
      ['archway'],
      `expected a mapping such as { auto_cancel: false }, got ${describeValue(value)}`,
    );
  const settings: RepoSettings = {};
  for (const [k, v] of Object.entries(value)) {
    if (k !== 'auto_cancel')
      throw source.error(['archway', k], `unknown key '${k}': archway's settings are auto_cancel`);
    const b = v === true || v === 'true' ? true : v === false || v === 'false' ? false : undefined;
    if (b === undefined)
      throw source.error(['archway', k], `expected true or false, got ${describeValue(v)}`);
    settings.autoCancel = b;
  }
  return settings;
}

/**
 * Reads and validates `.archway.yml` / `.travis.yml` text. Throws ConfigError (code
 * CONFIG_INVALID) with the key path, line and column of the first problem.
 */
export function parseConfig(text: string, opts: ParseConfigOptions = {}): RepoConfig {
  const loaded = loadYaml(text, opts.limits);
  const parsed = RootSchema.safeParse(loaded.value, { reportInput: true });
  if (!parsed.success) throw zodError(parsed.error, loaded.source, loaded.value);
  const out = parsed.data;
  if (!('root' in out)) {
    return {
      root: { versions: {}, phases: {}, extra: {} },
      env: { global: [], jobs: undefined },
      include: [],
      exclude: [],
      allowFailures: [],
      fastFinish: false,
      stages: [],
      ignored: [],
      warnings: loaded.warnings,
      settings: {},
    };
  }
  const settings = readSettings(out.root.extra.archway, loaded.source);
  delete out.root.extra.archway;
  const warnings = [...loaded.warnings];
  const jobsKey =
    out.bothJobsAndMatrix || (isMapping(loaded.value) && 'matrix' in loaded.value) ? 'matrix' : 'jobs';
  if (out.bothJobsAndMatrix) warnings.push('both matrix and jobs are given; matrix is used (as Travis does)');
  if (out.env.warning) warnings.push(out.env.warning);

  const rootLanguage = out.root.language ?? DEFAULT_LANGUAGE;
  if (!languageInfo(rootLanguage)) {
    warnings.push(
      `language '${rootLanguage}' is unknown to archway: it has no version keys and no default install or script`,
    );
  }
  const ignored = new Collector();
  const site: ErrorSite = { source: loaded.source, doc: loaded.value };
  collectIgnored(out.root, [], rootLanguage, ignored, site);
  const jobs = out.jobs ?? { include: [], exclude: [], allowFailures: [], fastFinish: false, unknown: [] };
  for (const key of jobs.unknown) ignored.add(key, 'not a key of jobs; ignored', [jobsKey, key]);
  jobs.include.forEach((entry, i) => {
    const at: KeyPath = [jobsKey, 'include', i];
    checkSingleValues(entry, at, loaded.source, loaded.value);
    const language = entry.language ?? rootLanguage;
    collectIgnored(entry, at, language, ignored, site);
    if (entry.language !== undefined && !languageInfo(entry.language)) {
      warnings.push(
        `${formatKeyPath([...at, 'language'])}: language '${entry.language}' is unknown to archway`,
      );
    }
  });

  // Archway runs the toolchain of the image; say so once per version key that is used.
  const versionKeys = new Set<string>();
  for (const e of [out.root, ...jobs.include]) {
    const info = languageInfo(e.language ?? rootLanguage);
    for (const key of Object.keys(e.versions)) if (info?.versionKeys.includes(key)) versionKeys.add(key);
  }
  for (const key of VERSION_KEYS) {
    if (!versionKeys.has(key)) continue;
    warnings.push(
      `${key}: each value makes its own job and sets its version variable, but archway does not install language versions: every job uses its image's toolchain`,
    );
  }

  const config: RepoConfig = {
    root: out.root,
    env: out.env,
    include: jobs.include,
    exclude: jobs.exclude,
    allowFailures: jobs.allowFailures,
    fastFinish: jobs.fastFinish,
    stages: out.stages,
    ignored: ignored.list(),
    warnings,
    settings,
  };
  if (out.branches !== undefined) config.branches = out.branches;
  return config;
}
