import { z } from 'zod';
import {
  ARCHES,
  type Arch,
  DEFAULT_LIMITS,
  EndReason,
  ImageRef,
  NetworkMode,
  parseArch,
  ResourceLimits,
} from './domain.ts';
import { InvalidInputError } from './errors/invalid-input-error.ts';

const EnvName = z
  .string()
  .regex(
    /^[A-Za-z_][A-Za-z0-9_]{0,127}$/,
    'a variable name: letters, digits and _, not starting with a digit',
  );

/** An arch or one of its aliases, normalised. */
export const ArchInput = z.string().transform((s, ctx): Arch => {
  try {
    return parseArch(s);
  } catch (e) {
    ctx.addIssue({
      code: 'custom',
      message: e instanceof InvalidInputError ? e.message.replace(/^arch: /, '') : String(e),
    });
    return z.NEVER;
  }
});

/** Most labels one job may carry: each is an index key in Redis. */
export const MAX_LABELS = 32;

/**
 * Largest script, in bytes (a string, or a list's commands together). The script reaches the
 * container as a file, not argv, so it is not bound by the kernel's 128 KiB per argument.
 */
export const MAX_SCRIPT_BYTES = 1_048_576;

/**
 * Largest env, and largest secrets, in bytes (names, values and `=`): both are the exec's
 * environment, which the kernel bounds together with argv (ARG_MAX: a quarter of the 8 MiB stack).
 */
export const MAX_ENV_BYTES = 256 * 1024;

/** An environment value: execve takes NUL-terminated strings, so a NUL byte cannot reach the job. */
const EnvValue = z.string().refine((v) => !v.includes('\0'), 'a value may not contain a NUL byte');

const envBytes = (r: Record<string, string>) =>
  Object.entries(r).reduce((n, [k, v]) => n + Buffer.byteLength(k) + Buffer.byteLength(v) + 2, 0);
const envFits = (r: Record<string, string>) => envBytes(r) <= MAX_ENV_BYTES;

/**
 * What a user submits: the only definition of a job (the API's OpenAPI is generated from it).
 * Unknown fields are refused, so a typo never silently drops a setting.
 */
/** Where a job's source comes from, as a user gives it (`POST /v1/jobs`): fetched on the host side. */
export const JobSource = z.object({
  git: z.string().min(1).max(2048),
  ref: z.string().min(1).max(255).optional(),
  sha: z
    .string()
    .regex(/^[0-9a-f]{40}$/, 'a full 40-character commit sha')
    .optional(),
});
export type JobSource = z.infer<typeof JobSource>;

/** A job's source as the API writes it: a build of an uploaded tree also names its upload. */
const StoredJobSource = JobSource.extend({
  /**
   * Set by the API, never by a user (the body of POST /v1/jobs has no such field): `git` is the
   * API's own URL of this uploaded tree, fetched under `uploadSourcePolicy` (wherever the API is).
   */
  upload: z
    .string()
    .regex(/^u[0-9a-f]{24}$/, 'an upload id')
    .optional(),
});

export const JobSpec = z
  .object({
    /** amd64, arm64, ppc64le or s390x; aliases x86_64, x64, aarch64, ppc64el and power are accepted. */
    arch: ArchInput,
    /** A catalog name (`busybox`), or a pinned version (`busybox@sha256:...`). */
    image: z
      .string()
      .refine((s) => ImageRef.safeParse(s).success, 'an image name, or name@sha256:<64 hex digits>'),
    /** A shell script, or a list of commands run in order, stopping at the first that fails. */
    script: z.union([
      z
        .string()
        .min(1)
        .refine((s) => Buffer.byteLength(s) <= MAX_SCRIPT_BYTES, `at most ${MAX_SCRIPT_BYTES} bytes`),
      z
        .array(z.string().min(1).max(65_536))
        .min(1)
        .max(1000)
        .refine(
          (l) => l.reduce((n, c) => n + Buffer.byteLength(c) + 1, 0) <= MAX_SCRIPT_BYTES,
          `at most ${MAX_SCRIPT_BYTES} bytes of commands together`,
        ),
    ]),
    env: z
      .record(EnvName, EnvValue.max(65_536))
      .default({})
      .refine(envFits, `at most ${MAX_ENV_BYTES} bytes of names and values together`),
    /** Like env, but their values are replaced by [secure] wherever they appear in the log. */
    secrets: z
      .record(EnvName, EnvValue.min(1).max(65_536))
      .default({})
      .refine(envFits, `at most ${MAX_ENV_BYTES} bytes of names and values together`),
    /** Where the job's source comes from (fetched on the host side). */
    source: StoredJobSource.strict().optional(),
    /** Wall-clock limit, in seconds. Default 3000. */
    timeoutSeconds: z.int().positive().max(86_400).default(3000),
    /** Ends the job when it prints nothing for this long, in seconds. Default 600. */
    silenceTimeoutSeconds: z.int().positive().max(86_400).default(600),
    resources: ResourceLimits.strict().default({}),
    /**
     * `none` (default for API jobs): only loopback. `egress`: outbound to the internet with DNS,
     * never the host, link-local, other jobs or private ranges; builds from a repository get it.
     */
    network: NetworkMode.default('none'),
    /** Free-form key/value pairs, for listing (`GET /v1/jobs?label=k=v`). */
    labels: z
      .record(z.string().regex(/^[A-Za-z0-9_./-]{1,63}$/, 'a label key'), z.string().max(255))
      .default({})
      .refine((l) => Object.keys(l).length <= MAX_LABELS, `at most ${MAX_LABELS} labels per job`),
    /** 1 (first) to 10 (last). Default 5. */
    priority: z.int().min(1).max(10).default(5),
  })
  .strict();
export type JobSpec = z.output<typeof JobSpec>;
export type JobSpecInput = z.input<typeof JobSpec>;

/** The body of `POST /v1/jobs`: a JobSpec whose source is a user's (no `upload`: 400 `source.upload: unknown field`). */
export const JobSubmission = JobSpec.extend({ source: JobSource.strict().optional() });
export type JobSubmission = z.output<typeof JobSubmission>;

/**
 * A job spec as stored and served: JobSpec without the intake's size bounds (script, env,
 * secrets, labels), so that a record written before a bound existed still reads, and is still
 * served and swept. Everything that enters goes through JobSpec.
 */
export const StoredJobSpec = JobSpec.extend({
  script: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
  env: z.record(EnvName, z.string()).default({}),
  secrets: z.record(EnvName, z.string().min(1)).default({}),
  labels: z.record(z.string(), z.string()).default({}),
});

export const JOB_STATES = ['queued', 'running', 'passed', 'failed', 'errored', 'canceled'] as const;
export const JobState = z.enum(JOB_STATES);
export type JobState = z.infer<typeof JobState>;
export const FINAL_STATES: readonly JobState[] = ['passed', 'failed', 'errored', 'canceled'];

/**
 * The job state machine: every transition is checked against this table, in one place (the
 * transition script in queue/). `running -> running` is a new attempt taking over a lost one;
 * `running -> queued` is an errored attempt that will be retried.
 */
export const TRANSITIONS: Readonly<Record<JobState, readonly JobState[]>> = {
  queued: ['running', 'canceled'],
  running: ['running', 'queued', 'passed', 'failed', 'errored', 'canceled'],
  passed: [],
  failed: [],
  errored: [],
  canceled: [],
};

/** One try of a job on one node. */
export const Attempt = z.object({
  n: z.int().positive(),
  node: z.string(),
  startedAt: z.string(),
  endedAt: z.string().optional(),
  outcome: JobState.optional(),
  reason: EndReason.optional(),
  exitCode: z.int().optional(),
  error: z.string().optional(),
});
export type Attempt = z.infer<typeof Attempt>;

/** A job as stored and served: the spec plus what happened to it. */
/**
 * The label a job of a private repository carries (`visibility=private`, set by the GitHub App
 * from the webhook's `repository.private`): its source URL and sha are shown to admin tokens only.
 */
export const VISIBILITY_LABEL = 'visibility';

/** A job's time limits as the node of its last attempt applies them: the spec's, times its arch's multiplier (ARCHWAY_TIME_MULTIPLIERS). */
export const EffectiveLimits = z.object({
  timeoutSeconds: z.int().positive(),
  silenceTimeoutSeconds: z.int().positive(),
  /** The factor applied (1: the spec's limits as they are). */
  multiplier: z.number().positive(),
});
export type EffectiveLimits = z.infer<typeof EffectiveLimits>;

export const JobRecord = z.object({
  id: z.string(),
  arch: z.enum(ARCHES),
  image: z.string(),
  state: JobState,
  reason: EndReason.optional(),
  exitCode: z.int().optional(),
  spec: StoredJobSpec,
  labels: z.record(z.string(), z.string()),
  createdAt: z.string(),
  startedAt: z.string().optional(),
  finishedAt: z.string().optional(),
  node: z.string().optional(),
  attempt: z.int().nonnegative(),
  attempts: z.array(Attempt),
  cancelRequested: z.boolean(),
  /** Things the user should know about the job (no live worker for its arch, ...). */
  warnings: z.array(z.string()),
  logBytes: z.int().nonnegative(),
  /** Digest of the image version the last attempt ran. */
  imageDigest: z.string().optional(),
  /** The finished job this one is a new run of (`POST /v1/jobs/:id/restart`). */
  restartOf: z.string().optional(),
  /** The job that is this one's new run, once it was restarted. */
  restartedBy: z.string().optional(),
  /** The time limits its last attempt runs under (absent before the first attempt). */
  effectiveLimits: EffectiveLimits.optional(),
  /** Why a queued job waits although a slot may be free: a concurrency cap ("repository o/r has 4 of 4 jobs running"). */
  waitReason: z.string().optional(),
});
export type JobRecord = z.infer<typeof JobRecord>;

export const DEFAULT_JOB_LIMITS = DEFAULT_LIMITS;
