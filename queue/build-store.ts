import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { Keys } from '../src/core/index.ts';
import { createLease, type Lease } from './lease.ts';

/** How long a commit's claim stops a second event from building it again (push and check_suite both ask). */
const CLAIM_TTL_S = 7 * 86_400;
/** How long a build record is kept after its last change. */
export const BUILD_TTL_S = 30 * 86_400;
/** How long the one event starting a claimed build holds it. */
const START_LOCK_MS = 120_000;

/** A slot's state: a job state, or `waiting` (its stage not reached) and `skipped` (an earlier stage failed). */
export const BuildSlotState = z.enum([
  'waiting',
  'queued',
  'running',
  'passed',
  'failed',
  'errored',
  'canceled',
  'skipped',
]);
export type BuildSlotState = z.infer<typeof BuildSlotState>;

export const BuildState = z.enum(['starting', 'running', 'passed', 'failed', 'canceled']);
export type BuildState = z.infer<typeof BuildState>;

/** One job of a build, without its expanded job: its place, its current job (a re-run makes a new generation). */
const BuildSlotHead = z.object({
  n: z.int().positive(),
  name: z.string(),
  stageIndex: z.int().nonnegative(),
  allowFailure: z.boolean(),
  gen: z.int().nonnegative(),
  jobId: z.string(),
  /** The key of the slot's check run (`<build>-<n>-<gen>`): a new generation is a new check run. */
  checkKey: z.string(),
  state: BuildSlotState,
});

/** A build without its event and slots: what is needed to advance its stages, re-run it, cancel it. */
const BuildHead = z.object({
  id: z.string(),
  number: z.int().positive(),
  repo: z.string(),
  repoId: z.number(),
  installationId: z.number(),
  sha: z.string(),
  /** Where the source is fetched from (a fork's clone URL for its pull requests). */
  cloneUrl: z.string(),
  /** The repository is private (GitHub's `repository.private`): its jobs' sources are shown to admin tokens only. */
  private: z.boolean().default(false),
  ref: z.string(),
  /** Whether the workers get an installation token for the source (not for forks). */
  credential: z.boolean(),
  /** `push:<branch>` or `pr:<number>`: a newer build of the same scope supersedes this one. */
  scope: z.string().optional(),
  autoCancel: z.boolean(),
  configPath: z.string(),
  stages: z.array(z.string()),
  currentStage: z.int().nonnegative(),
  state: BuildState,
  /** Markdown added to every check run's summary: ignored keys, warnings. */
  notes: z.string(),
  createdAt: z.string(),
  /** Who made the build: the GitHub App (check runs), or a client of the API (`POST /v1/builds`). */
  origin: z.enum(['github', 'api']).default('github'),
  /** `jobs.fast_finish`: the build is decided once the jobs not allowed to fail have finished. */
  fastFinish: z.boolean().default(false),
  /** API builds: the token name that submitted it. */
  clientId: z.string().optional(),
  /** API builds from an uploaded tree: the upload's id (kept while the build may still run). */
  upload: z.string().optional(),
  /** API builds: variables added to every job's environment (plain, not secrets). */
  env: z.record(z.string(), z.string()).optional(),
  /** When the build was decided (passed, failed, canceled). */
  finishedAt: z.string().optional(),
});

/** One slot of a build, with its expanded job of type J. */
export type BuildSlot<J> = z.infer<typeof BuildSlotHead> & { job: J };
/** A build whose slots hold jobs of type J and whose event is of type E. */
export type BuildRecord<J, E> = z.infer<typeof BuildHead> & { event: E; slots: BuildSlot<J>[] };

/** The schema of a build record whose jobs and event are read with `job` and `event`. */
export function buildRecordSchema<J, E>(job: z.ZodType<J>, event: z.ZodType<E>) {
  return BuildHead.extend({ event, slots: z.array(BuildSlotHead.extend({ job })) });
}

export interface BuildStoreOptions<J, E> {
  /** How a slot's job is read back (written by archway, still checked: a trust boundary). */
  job: z.ZodType<J>;
  event: z.ZodType<E>;
}

/** Where a commit is built: its repository, sha and scope (`push:<branch>`, `pr:<n>`, `ref:<ref>`). */
export interface CommitScope {
  repo: string;
  sha: string;
  scope: string;
}

export interface BuildStore<J, E> {
  /** The build, read back through zod; `undefined` when there is none. Throws on a record that does not parse. */
  get(id: string): Promise<BuildRecord<J, E> | undefined>;
  /** Writes a new build and lists it under its commit and in the list of all builds. */
  create(b: BuildRecord<J, E>): Promise<void>;
  /**
   * Builds newest first, created before `before` (ms; a cursor from the previous page), that
   * `where` accepts; `next` is the cursor of the next page when there may be more.
   */
  list(f: {
    before?: number | undefined;
    limit: number;
    where?: (b: BuildRecord<J, E>) => boolean;
  }): Promise<{ builds: BuildRecord<J, E>[]; next?: number }>;
  /**
   * Changes a build under WATCH: concurrent changes (the reporter, a re-run, a cancel) never
   * overwrite each other. `fn` gets a copy and returns the new record, or `undefined` to change
   * nothing (then `after` is `before`). `undefined` when there is no such build.
   */
  update(
    id: string,
    fn: (b: BuildRecord<J, E>) => BuildRecord<J, E> | undefined,
  ): Promise<{ before: BuildRecord<J, E>; after: BuildRecord<J, E> } | undefined>;
  /**
   * Claims a commit for `id` (one build per commit and scope). Returns `id` when it got the
   * claim (or `force`), else the id that holds it.
   */
  claim(c: CommitScope, id: string, opts?: { force?: boolean }): Promise<string>;
  /** The lease held by the one event that starts a claimed build (a retry takes over once it expires). */
  startLock(c: CommitScope): Lease;
  /** The repository's next build number. */
  nextNumber(repo: string): Promise<number>;
  /** The newest build of a commit. */
  lastOfCommit(repo: string, sha: string): Promise<BuildRecord<J, E> | undefined>;
  /** Makes `id` the newest build of its scope; returns the one it replaces (auto-cancel). */
  setLatest(repo: string, scope: string, id: string): Promise<string | undefined>;
}

/** Build records in Redis, one JSON value per build (keys under the shared hash tag). */
export function createBuildStore<J, E>(
  redis: Redis,
  keys: Keys,
  o: BuildStoreOptions<J, E>,
): BuildStore<J, E> {
  const schema = buildRecordSchema(o.job, o.event);

  async function get(id: string): Promise<BuildRecord<J, E> | undefined> {
    const raw = await redis.get(keys.build(id));
    if (!raw) return undefined;
    const parsed = schema.safeParse(JSON.parse(raw));
    if (!parsed.success)
      throw new Error(`build ${id}: stored record is invalid: ${parsed.error.issues[0]?.message}`);
    return parsed.data;
  }

  return {
    get,
    async create(b) {
      await redis
        .multi()
        .set(keys.build(b.id), JSON.stringify(b), 'EX', BUILD_TTL_S)
        .rpush(keys.buildsOfSha(b.repo, b.sha), b.id)
        .expire(keys.buildsOfSha(b.repo, b.sha), BUILD_TTL_S)
        .zadd(keys.buildsAll, Date.parse(b.createdAt), b.id)
        .exec();
    },
    async list(f) {
      const out: BuildRecord<J, E>[] = [];
      let max = f.before === undefined ? '+inf' : `(${f.before}`;
      // Scans in pages of the index; a build whose record expired leaves the index as it is met.
      for (let scanned = 0; scanned < 5000; ) {
        const page = await redis.zrevrangebyscore(keys.buildsAll, max, '-inf', 'WITHSCORES', 'LIMIT', 0, 100);
        if (page.length === 0) return { builds: out };
        for (let i = 0; i + 1 < page.length; i += 2) {
          const id = page[i] as string;
          const score = Number(page[i + 1]);
          scanned++;
          max = `(${score}`;
          const b = await get(id);
          if (!b) {
            await redis.zrem(keys.buildsAll, id);
            continue;
          }
          if (f.where && !f.where(b)) continue;
          out.push(b);
          if (out.length >= f.limit) return { builds: out, next: score };
        }
      }
      return { builds: out };
    },
    async update(id, fn) {
      const key = keys.build(id);
      for (let i = 0; i < 20; i++) {
        await redis.watch(key);
        const before = await get(id);
        if (!before) {
          await redis.unwatch();
          return undefined;
        }
        const after = fn(structuredClone(before));
        if (!after) {
          await redis.unwatch();
          return { before, after: before };
        }
        const ok = await redis.multi().set(key, JSON.stringify(after), 'EX', BUILD_TTL_S).exec();
        if (ok) return { before, after };
      }
      throw new Error(`build ${id}: too much contention`);
    },
    async claim(c, id, opts = {}) {
      const key = keys.buildClaim(c.repo, c.sha, c.scope);
      if (opts.force) {
        await redis.set(key, id, 'EX', CLAIM_TTL_S);
        return id;
      }
      if ((await redis.set(key, id, 'EX', CLAIM_TTL_S, 'NX')) !== null) return id;
      return (await redis.get(key)) ?? id;
    },
    startLock: (c) => createLease(redis, keys.buildClaimLock(c.repo, c.sha, c.scope), START_LOCK_MS),
    nextNumber: (repo) => redis.incr(keys.buildNumber(repo)),
    async lastOfCommit(repo, sha) {
      const ids = await redis.lrange(keys.buildsOfSha(repo, sha), -1, -1);
      return ids[0] ? get(ids[0]) : undefined;
    },
    async setLatest(repo, scope, id) {
      return (await redis.getset(keys.buildLatest(repo, scope), id)) ?? undefined;
    },
  };
}
