import { z } from 'zod';
import { MASK } from '../../queue/index.ts';
import {
  Arch,
  ArchInput,
  JobId,
  JobRecord,
  JobState,
  StoredJobSpec,
  VISIBILITY_LABEL,
} from '../core/index.ts';

/** The API's named schemas (components of the OpenAPI document): a registry of its own, not zod's global one. */
export const apiSchemas = z.registry<{ id: string }>();

/** How a wait estimate was made, and the estimate in words (docs/operations.md, "Estimated wait"). */
export const WaitEstimateView = z.object({
  basis: z.enum(['free_slot', 'queue', 'scale_up', 'disabled', 'unknown']),
  note: z.string(),
});

const inLine = z
  .int()
  .min(0)
  .describe("Jobs in the arch's line now, waiting for a slot in the order nodes take them");

/**
 * Where a queued job stands in its arch's queue (issue #13): set by `GET /v1/jobs/:id` on a
 * queued job, absent in lists and for every other state.
 */
export const JobQueuePlace = z
  .discriminatedUnion('status', [
    z.object({
      /** In line for a slot. */
      status: z.literal('waiting'),
      position: z
        .int()
        .min(1)
        .describe(
          '1-based: 1 is the next job a node of the arch takes (lower priority first, then the oldest)',
        ),
      of: inLine,
      estimatedWaitSeconds: z
        .number()
        .nullable()
        .describe(
          "The pool's estimate with the jobs before this one in place of the whole queue; null when unknown (see estimate)",
        ),
      estimate: WaitEstimateView,
    }),
    z.object({
      /** Not in line until `until`: a retry in back-off after an attempt the host failed. */
      status: z.literal('delayed'),
      until: z.string().describe('When it is back in line (ISO time)'),
      of: inLine,
    }),
    z.object({
      /** Held by a concurrency cap (`waitReason` says which): no position until a job of its group ends. */
      status: z.literal('held'),
      of: inLine,
    }),
    z.object({
      /** A node has taken it and is starting it. */
      status: z.literal('starting'),
      of: inLine,
    }),
  ])
  .register(apiSchemas, { id: 'JobQueuePlace' });
export type JobQueuePlace = z.infer<typeof JobQueuePlace>;

/**
 * A job as the API serves it: the stored record, with the spec as stored (arch already
 * normalised, defaults filled in) and every secret value replaced by [secure].
 */
export const JobView = JobRecord.extend({
  // The request schema's arch is a transform (aliases), which a response cannot be encoded through.
  spec: StoredJobSpec.extend({ arch: Arch }),
  /** A signed link to the job's page (its live log), for people: `GET /v1/jobs/:id` sets it. */
  pageUrl: z.string().optional(),
  /** Where a queued job stands in its arch's queue: `GET /v1/jobs/:id` sets it on a queued job. */
  queue: JobQueuePlace.optional(),
}).register(apiSchemas, { id: 'Job' });
export type JobView = z.infer<typeof JobView>;

export const CreatedJob = z
  .object({
    job: JobView,
    /** Things the user should know (no live worker for the arch, ...); also stored on the job. */
    warnings: z.array(z.string()),
  })
  .register(apiSchemas, { id: 'CreatedJob' });

export const JobList = z
  .object({
    /** Newest first. */
    jobs: z.array(JobView),
    /** Pass as `cursor` for the next page; absent on the last page. */
    next: z.string().optional(),
  })
  .register(apiSchemas, { id: 'JobList' });

export const ErrorBody = z
  .object({
    error: z.object({
      /** Stable: branch on it (docs/errors.md, docs/api.md). */
      code: z.string(),
      message: z.string(),
      /** The field at fault, for INVALID_INPUT. */
      field: z.string().optional(),
    }),
  })
  .register(apiSchemas, { id: 'Error' });
export type ErrorBody = z.infer<typeof ErrorBody>;

export const JobParams = z.object({ id: JobId });

/** A log stream entry id (`<ms>-<seq>`), the resume point of a log. */
export const StreamId = z.string().regex(/^\d{1,20}-\d{1,20}$/, 'a log entry id such as 1700000000000-0');

export const ListQuery = z.object({
  state: JobState.optional(),
  /** An arch or one of its aliases. */
  arch: ArchInput.optional(),
  /** `key=value` */
  label: z
    .string()
    .regex(/^[^=]+=.*$/, 'key=value')
    .optional(),
  limit: z.coerce.number().int().min(1).max(100).default(20),
  /** `next` of the previous page. */
  cursor: z
    .string()
    .regex(/^\d{1,16}$/, 'the `next` value of the previous page')
    .optional(),
});

/** `1`/`true` or `0`/`false`, as a query flag. */
export const Flag = z.enum(['1', 'true', '0', 'false']).transform((v) => v === '1' || v === 'true');

/**
 * The job with its secret values replaced by [secure]: the API never returns a secret. A job of a
 * private repository (label visibility=private) shows its source (URL, ref, sha) and its `sha`
 * label only to admin tokens.
 */
export function maskJob(job: JobRecord, viewer: { admin: boolean } = { admin: false }): JobView {
  const secrets = Object.fromEntries(Object.keys(job.spec.secrets).map((k) => [k, MASK]));
  if (viewer.admin || job.labels[VISIBILITY_LABEL] !== 'private')
    return { ...job, spec: { ...job.spec, secrets } };
  const { source: _source, ...spec } = job.spec;
  const { sha: _sha, ...labels } = job.labels;
  return { ...job, labels, spec: { ...spec, labels, secrets } };
}

const ERROR_DESCRIPTIONS: Record<number, string> = {
  400: 'Bad input; `error.field` names the field at fault',
  401: 'No token, or a token that matches none (with WWW-Authenticate: Bearer)',
  403: 'The token lacks the scope this request needs',
  404: 'No such job',
  409: 'Conflict: the Idempotency-Key was used with another body, or the job has already finished',
  413: 'The body is larger than ARCHWAY_BODY_LIMIT_BYTES',
  415: 'The body is not JSON',
  429: 'Too many followers of this log, or of logs on this API (TOO_MANY_FOLLOWERS): read it without following, or retry later',
  503: 'Unavailable for now, retry: Redis is away (REDIS_UNAVAILABLE), or an uploaded tree is held by an API replica that cannot be reached (UPLOAD_UNAVAILABLE)',
};

/** Error responses for a route's schema (so they appear in the OpenAPI document). */
export function errorResponses(...codes: number[]) {
  return Object.fromEntries(
    codes.map((c) => [
      c,
      {
        description: ERROR_DESCRIPTIONS[c] ?? 'Error',
        content: { 'application/json': { schema: ErrorBody } },
      },
    ]),
  );
}
