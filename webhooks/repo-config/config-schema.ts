import { z } from 'zod';
import { type Arch, ImageRef, parseArch } from '../../src/core/index.ts';
import { ConditionSyntaxError, parseCondition, rubyRegex } from './conditions.ts';
import { EnvError, type EnvVar, envEntries, envEntry, type RootEnv, rootEnv } from './env-vars.ts';
import { canonicalLanguage, VERSION_KEY_ALIASES, VERSION_KEYS } from './languages.ts';
import type { YamlValue } from './load-yaml.ts';

/** The phases of a job, in the order they run. */
export const PHASES = [
  'before_install',
  'install',
  'before_script',
  'script',
  'after_success',
  'after_failure',
  'after_script',
] as const;
export type Phase = (typeof PHASES)[number];

/** The operating systems Travis knows; archway runs `linux` only. */
export const OSES = ['linux', 'osx', 'windows', 'freebsd'] as const;
export type Os = (typeof OSES)[number];

/** Arches a config may name: archway's pools, plus `arm64-graviton2`, which runs in the arm64 pool. */
export const CONFIG_ARCHES = ['amd64', 'arm64', 'arm64-graviton2', 'ppc64le', 's390x'] as const;
export type ConfigArch = (typeof CONFIG_ARCHES)[number];

/** Keys whose lists make one job per value, in the order they expand (`env.jobs` comes last). */
export const EXPANSION_KEYS: readonly string[] = ['os', 'arch', 'compiler', ...VERSION_KEYS, 'osx_image'];

const OS_ALIASES: Readonly<Record<string, Os | 'linux-ppc64le'>> = {
  linux: 'linux',
  ubuntu: 'linux',
  'linux-ppc64le': 'linux-ppc64le',
  osx: 'osx',
  mac: 'osx',
  macos: 'osx',
  macosx: 'osx',
  ios: 'osx',
  windows: 'windows',
  win: 'windows',
  freebsd: 'freebsd',
  bsd: 'freebsd',
};

const ARCH_HINT =
  'expected one of amd64, arm64, arm64-graviton2, ppc64le, s390x (aliases: x86_64, x64, aarch64, ppc64el, power, ppc64)';

/** A config's arch name, canonical (`aarch64` -> `arm64`), or undefined for one archway does not run. */
export function configArch(value: string): ConfigArch | undefined {
  const v = value.trim().toLowerCase();
  if (v === 'arm64-graviton2') return 'arm64-graviton2';
  // Travis's own aliases of ppc64le.
  if (v === 'ppc' || v === 'ppc64') return 'ppc64le';
  try {
    return parseArch(v);
  } catch {
    return undefined;
  }
}

/** The pool a config arch runs in. */
export function archPool(arch: ConfigArch): Arch {
  return arch === 'arm64-graviton2' ? 'arm64' : arch;
}

/** How a value is named in an error message. */
export function describeValue(v: unknown): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `'${v}'`;
  return String(v);
}

function flatList(v: unknown): unknown[] {
  if (v === null || v === undefined) return [];
  if (!Array.isArray(v)) return [v];
  // Lists nested by aliases (`script: [*common, make]`) are flattened, and null items dropped, as Travis does.
  return (v as unknown[]).flat(Number.POSITIVE_INFINITY).filter((x) => x !== null && x !== undefined);
}

/** null is the same as absent (Travis drops blank keys). */
function opt<T extends z.ZodType>(schema: T) {
  return z.preprocess((v) => (v === null ? undefined : v), schema.optional());
}

const Str = z.unknown().transform((v, ctx): string => {
  if (typeof v === 'string') return v;
  if (typeof v === 'boolean') return String(v);
  ctx.addIssue({ code: 'custom', message: `expected a string, got ${describeValue(v)}` });
  return z.NEVER;
});

const Bool = z.unknown().transform((v, ctx): boolean => {
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string') {
    const s = v.trim().toLowerCase();
    if (['true', 'yes', 'on', 'y'].includes(s)) return true;
    if (['false', 'no', 'off', 'n', ''].includes(s)) return false;
  }
  ctx.addIssue({ code: 'custom', message: `expected true or false, got ${describeValue(v)}` });
  return z.NEVER;
});

const strList = <T extends z.ZodType>(item: T) => z.preprocess(flatList, z.array(item));

const OsValue = Str.transform((s, ctx): Os | 'linux-ppc64le' => {
  const os = OS_ALIASES[s.trim().toLowerCase()];
  if (!os) {
    ctx.addIssue({
      code: 'custom',
      message: `unknown os '${s}': expected linux, osx, windows or freebsd`,
    });
    return z.NEVER;
  }
  return os;
});

const ArchValue = Str.transform((s, ctx): ConfigArch => {
  const arch = configArch(s);
  if (!arch) {
    ctx.addIssue({ code: 'custom', message: `unknown arch '${s}': ${ARCH_HINT}` });
    return z.NEVER;
  }
  return arch;
});

/** A condition, checked to parse (the text is kept; it is parsed again where it is used). */
export const ConditionText = Str.transform((s, ctx): string => {
  try {
    parseCondition(s);
  } catch (e) {
    ctx.addIssue({
      code: 'custom',
      message: e instanceof ConditionSyntaxError ? `${e.message} in '${s}'` : String(e),
    });
    return z.NEVER;
  }
  return s;
});

const ImageText = Str.transform((s, ctx): string => {
  const r = ImageRef.safeParse(s);
  if (!r.success) {
    ctx.addIssue({ code: 'custom', message: r.error.issues[0]?.message ?? `invalid image '${s}'` });
    return z.NEVER;
  }
  return s;
});

const Commands = strList(Str);

function envIssue(ctx: z.RefinementCtx, e: unknown): never {
  if (e instanceof EnvError) {
    ctx.addIssue({ code: 'custom', message: e.message, path: e.path });
    return z.NEVER;
  }
  throw e;
}

/** `env:` of a jobs entry: all its variables belong to that one job. */
const EntryEnv = z.unknown().transform((v, ctx): EnvVar[] => {
  try {
    const value = v as YamlValue;
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      if ('global' in value || 'jobs' in value || 'matrix' in value) {
        const r = rootEnv(value);
        return [...r.global, ...(r.jobs ?? []).flat()];
      }
      return envEntry(value);
    }
    return envEntries(value).flat();
  } catch (e) {
    return envIssue(ctx, e);
  }
});

const RootEnvSchema = z.unknown().transform((v, ctx): RootEnv => {
  try {
    return rootEnv(v as YamlValue);
  } catch (e) {
    return envIssue(ctx, e);
  }
});

/** Keys a job entry (the root, or one of `jobs.include`) understands; the rest are kept as `extra`. */
const ENTRY_KEYS = [
  'language',
  'os',
  'arch',
  'compiler',
  'osx_image',
  'dist',
  'name',
  'stage',
  'if',
  'image',
  'allow_failure',
  'env',
  ...PHASES,
  ...VERSION_KEYS,
  ...Object.keys(VERSION_KEY_ALIASES),
] as const;

const versionShape = Object.fromEntries(
  [...VERSION_KEYS, ...Object.keys(VERSION_KEY_ALIASES)].map((k) => [k, opt(strList(Str))]),
);
const phaseShape = Object.fromEntries(PHASES.map((p) => [p, opt(Commands)]));

/**
 * One job's settings as written: the root of the config, an entry of `jobs.include`, or an entry
 * of `jobs.exclude` / `jobs.allow_failures` (which match jobs by these same keys).
 * Expansion keys (`os`, `arch`, `compiler`, version keys, `osx_image`) are lists here; an include
 * entry must give one value of each (checked by parseConfig, which knows the lines).
 */
export interface JobEntry {
  language?: string;
  os?: (Os | 'linux-ppc64le')[];
  arch?: ConfigArch[];
  compiler?: string[];
  osx_image?: string[];
  /** Version keys (`python`, `rvm`, `node_js`, ...), aliases resolved (`ruby:` -> `rvm`). */
  versions: Record<string, string[]>;
  dist?: string;
  name?: string;
  stage?: string;
  if?: string;
  /** archway's own key: the image the job runs in. */
  image?: string;
  allowFailure?: boolean;
  /** Variables of this entry (for the root, see RootConfig.env). */
  env?: EnvVar[];
  /** Commands per phase; `[]` when the config says `skip` or gives an empty list. */
  phases: Partial<Record<Phase, string[]>>;
  /** Every other key, as written. */
  extra: Record<string, YamlValue>;
}

function entrySchema<E extends z.ZodType>(env: E) {
  return z
    .looseObject({
      language: opt(Str),
      os: opt(strList(OsValue)),
      arch: opt(strList(ArchValue)),
      compiler: opt(strList(Str)),
      osx_image: opt(strList(Str)),
      dist: opt(strList(Str)),
      name: opt(Str),
      stage: opt(Str),
      if: opt(ConditionText),
      image: opt(ImageText),
      allow_failure: opt(Bool),
      env: opt(env),
      ...phaseShape,
      ...versionShape,
    })
    .transform((o) => {
      const rec = o as Record<string, unknown>;
      const versions: Record<string, string[]> = {};
      for (const key of VERSION_KEYS) {
        const v = rec[key] as string[] | undefined;
        if (v !== undefined) versions[key] = v;
      }
      for (const [alias, key] of Object.entries(VERSION_KEY_ALIASES)) {
        const v = rec[alias] as string[] | undefined;
        if (v !== undefined && versions[key] === undefined) versions[key] = v;
      }
      const phases: Partial<Record<Phase, string[]>> = {};
      for (const p of PHASES) {
        const cmds = rec[p] as string[] | undefined;
        if (cmds === undefined) continue;
        // `install: skip` skips the phase, as in Travis.
        phases[p] = cmds.length === 1 && cmds[0]?.trim() === 'skip' ? [] : cmds;
      }
      const extra: Record<string, YamlValue> = {};
      for (const [k, v] of Object.entries(rec)) {
        if (!(ENTRY_KEYS as readonly string[]).includes(k) && v !== undefined) extra[k] = v as YamlValue;
      }
      const entry: JobEntry = { versions, phases, extra };
      if (o.language !== undefined) entry.language = canonicalLanguage(o.language);
      if (o.os !== undefined) entry.os = o.os;
      if (o.arch !== undefined) entry.arch = o.arch;
      if (o.compiler !== undefined) entry.compiler = o.compiler;
      if (o.osx_image !== undefined) entry.osx_image = o.osx_image;
      // Not an expansion key: of a list, the first counts (for conditions); dist is ignored anyway.
      if (o.dist?.[0] !== undefined) entry.dist = o.dist[0];
      if (o.name !== undefined) entry.name = o.name;
      if (o.stage !== undefined) entry.stage = o.stage;
      if (o.if !== undefined) entry.if = o.if;
      if (o.image !== undefined) entry.image = o.image;
      if (o.allow_failure !== undefined) entry.allowFailure = o.allow_failure;
      return { entry, env: o.env as z.output<E> | undefined };
    });
}

const EntryObject = entrySchema(EntryEnv);

/** An entry of jobs.include / jobs.exclude / jobs.allow_failures; a null item is dropped. */
export const JobEntrySchema = z.unknown().transform((v, ctx): JobEntry | null => {
  if (v === null || v === undefined) return null;
  if (typeof v !== 'object' || Array.isArray(v)) {
    ctx.addIssue({ code: 'custom', message: `expected a mapping of job settings, got ${describeValue(v)}` });
    return z.NEVER;
  }
  const r = EntryObject.safeParse(v);
  if (!r.success) {
    for (const issue of r.error.issues) ctx.addIssue({ ...issue, code: 'custom', path: issue.path });
    return z.NEVER;
  }
  const { entry, env } = r.data;
  if (env !== undefined) entry.env = env;
  return entry;
});

/** A list of entries; a single mapping counts as a list of one; nested lists are flattened. */
const EntryList = z.preprocess(
  (v) => (Array.isArray(v) ? (v as unknown[]).flat(Number.POSITIVE_INFINITY) : v === null ? [] : [v]),
  z.array(JobEntrySchema),
);

const JobsSchema = z
  .preprocess(
    (v) => (Array.isArray(v) ? { include: v } : v),
    z.looseObject({
      include: opt(EntryList),
      exclude: opt(EntryList),
      allow_failures: opt(EntryList),
      allowed_failures: opt(EntryList),
      fast_finish: opt(Bool),
      fast_failure: opt(Bool),
    }),
  )
  .transform((j) => {
    const rec = j as Record<string, unknown>;
    const known = ['include', 'exclude', 'allow_failures', 'allowed_failures', 'fast_finish', 'fast_failure'];
    const unknown = Object.keys(rec).filter((k) => !known.includes(k) && rec[k] !== undefined);
    return {
      include: (j.include ?? []).filter((e): e is JobEntry => e !== null),
      exclude: (j.exclude ?? []).filter((e): e is JobEntry => e !== null),
      allowFailures: (j.allow_failures ?? j.allowed_failures ?? []).filter((e): e is JobEntry => e !== null),
      fastFinish: j.fast_finish ?? j.fast_failure ?? false,
      unknown,
    };
  });
export type JobsConfig = z.output<typeof JobsSchema>;

/** A declared stage: its name, and the condition under which it runs. */
export interface StageConfig {
  name: string;
  if?: string;
}

const StageSchema = z.unknown().transform((v, ctx): StageConfig | null => {
  if (v === null || v === undefined) return null;
  if (typeof v === 'string' || typeof v === 'boolean') return { name: String(v) };
  if (typeof v === 'object' && !Array.isArray(v)) {
    const r = z.looseObject({ name: Str, if: opt(ConditionText) }).safeParse(v as Record<string, unknown>);
    if (!r.success) {
      for (const issue of r.error.issues) ctx.addIssue({ ...issue, code: 'custom', path: issue.path });
      return z.NEVER;
    }
    return r.data.if === undefined ? { name: r.data.name } : { name: r.data.name, if: r.data.if };
  }
  ctx.addIssue({ code: 'custom', message: `expected a stage name or {name, if}, got ${describeValue(v)}` });
  return z.NEVER;
});

/** A branch name, or a `/regex/`. */
const BranchPattern = Str.transform((s, ctx): string => {
  const m = /^\/(.*)\/$/s.exec(s);
  if (m) {
    try {
      rubyRegex(m[1] ?? '');
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: `invalid regular expression ${s}: ${String(e)}` });
      return z.NEVER;
    }
  }
  return s;
});

/** `branches:` (a list means `only`). */
export interface BranchesConfig {
  only?: string[];
  except?: string[];
}

const BranchesSchema = z.preprocess(
  (v) => (Array.isArray(v) || typeof v === 'string' ? { only: v } : v),
  z
    .object(
      { only: opt(strList(BranchPattern)), except: opt(strList(BranchPattern)) },
      { error: (iss) => `expected a list of branches or {only, except}, got ${describeValue(iss.input)}` },
    )
    .strict()
    .transform((b): BranchesConfig => {
      const out: BranchesConfig = {};
      if (b.only !== undefined) out.only = b.only;
      if (b.except !== undefined) out.except = b.except;
      return out;
    }),
);

const RootObject = entrySchema(RootEnvSchema);

/** The root of a config: the root job entry, plus the keys that exist only there. */
export const RootSchema = z
  .unknown()
  .transform((v, ctx) => {
    if (v === null || v === undefined) return {};
    if (typeof v !== 'object' || Array.isArray(v)) {
      ctx.addIssue({
        code: 'custom',
        message: `the config must be a mapping of keys, got ${describeValue(v)}`,
      });
      return z.NEVER;
    }
    return v as Record<string, unknown>;
  })
  .pipe(
    z.looseObject({
      jobs: opt(JobsSchema),
      matrix: opt(JobsSchema),
      stages: opt(z.preprocess(flatList, z.array(StageSchema))),
      branches: opt(BranchesSchema),
    }),
  )
  .transform((o, ctx) => {
    const rec = o as Record<string, unknown>;
    const rest: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(rec)) {
      if (!['jobs', 'matrix', 'stages', 'branches'].includes(k)) rest[k] = v;
    }
    const r = RootObject.safeParse(rest);
    if (!r.success) {
      for (const issue of r.error.issues) ctx.addIssue({ ...issue, code: 'custom', path: issue.path });
      return z.NEVER;
    }
    return {
      root: r.data.entry,
      env: r.data.env ?? { global: [], jobs: undefined },
      jobs: o.matrix ?? o.jobs,
      bothJobsAndMatrix: o.matrix !== undefined && o.jobs !== undefined,
      stages: (o.stages ?? []).filter((s): s is StageConfig => s !== null),
      branches: o.branches,
    };
  });
export type RootOutput = z.output<typeof RootSchema>;
