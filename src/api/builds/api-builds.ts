import { createHash, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import {
  advance,
  type BuildRecord,
  type BuildSlot,
  cancelStages,
  createBuildStore,
  finishJob,
  IdempotencyConflictError,
  JobFinishedError,
  JobNotFoundError,
  JobNotRestartableError,
  type JobQueue,
  jobIdOf,
  type PoolStore,
  rerun,
  restartStages,
  startStages,
} from '../../../queue/index.ts';
import {
  type BuildEvent,
  BuildEventRecord,
  CONFIG_FILES,
  ConfigError,
  configErrorText,
  EVENT_TYPES,
  type ExpandedJob,
  ExpandedJobRecord,
  type ExpandResult,
  expandRepoConfig,
  type ImageToolchain,
  slotJobSpec,
} from '../../../webhooks/index.ts';
import {
  Arch,
  checkSourceUrl,
  FINAL_STATES,
  InvalidInputError,
  type JobState,
  type Keys,
  type Logger,
  parseSourceUrl,
  type SourceUrlPolicy,
  toError,
} from '../../core/index.ts';
import { BuildConflictError } from './build-conflict-error.ts';
import { BuildNotFoundError } from './build-not-found-error.ts';
import type { GitConfigReader } from './git-config-reader.ts';
import type { Uploads } from './uploads.ts';

/** A build made through the API: its slots hold expanded jobs, its event is a BuildEvent. */
export type ApiBuild = BuildRecord<ExpandedJob, BuildEvent>;
type Slot = BuildSlot<ExpandedJob>;

/** Where a build's tree comes from: a git URL (with ref or sha), or a tree uploaded with `POST /v1/uploads`. */
export const BuildSource = z.union([
  z
    .object({
      git: z.string().min(1).max(2048).describe('A remote https or git URL (as for jobs).'),
      ref: z.string().min(1).max(255).optional().describe('A branch or ref; default HEAD.'),
      sha: z
        .string()
        .regex(/^[0-9a-f]{40}$/, '40 lowercase hex digits')
        .optional(),
    })
    .strict(),
  z.object({ upload: z.string().regex(/^u[0-9a-f]{24}$/, 'an upload id (u + 24 hex digits)') }).strict(),
]);
export type BuildSource = z.infer<typeof BuildSource>;

/** Largest config, inline or read from the source, in bytes. */
export const MAX_CONFIG_BYTES = 256 * 1024;

export const BuildRequest = z
  .object({
    source: BuildSource,
    /**
     * The config text (`.travis.yml` format); default: the source's `.archway.yml` or `.travis.yml`
     * (a git source's at its ref or sha, and the build is then pinned to the commit it was read at).
     */
    config: z.string().max(MAX_CONFIG_BYTES).optional(),
    event: z
      .object({
        type: z.enum(EVENT_TYPES).default('api'),
        branch: z.string().max(255).optional(),
        tag: z.string().max(255).optional(),
        commitMessage: z.string().max(10_000).optional(),
      })
      .strict()
      .default({ type: 'api' }),
    /** Only the jobs of these arches run (the others are left out). */
    arches: z.array(Arch).min(1).optional(),
    /** Variables added to every job's environment. */
    env: z
      .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'a variable name'), z.string().max(4096))
      .optional(),
    /** A name for the build (`owner/name`), for listing. Default: from the git URL, or `local` for an upload. */
    repo: z
      .string()
      .regex(/^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)?$/, 'a name such as owner/repo')
      .max(200)
      .optional(),
  })
  .strict();
export type BuildRequest = z.infer<typeof BuildRequest>;

export interface ApiBuildsOptions {
  redis: Redis;
  keys: Keys;
  queue: JobQueue;
  pools: PoolStore;
  uploads: Uploads;
  /** Reads the config of a git source given without one. */
  gitConfig: GitConfigReader;
  logger: Logger;
  /** The API's address as workers reach it: uploads are fetched from `<url>/git/uploads/<id>.git`. */
  publicUrl: () => string;
  sourcePolicy: SourceUrlPolicy;
  /** Whether jobs get `network: egress` (as Travis jobs had network). */
  egress: boolean;
  toolchains?: Readonly<Record<string, ImageToolchain>> | undefined;
  /** How long an upload is kept after its build ended (a restart within it still runs), in ms. */
  uploadRetentionMs: number;
  /**
   * The GitHub App's re-run of one job (what its check run's "Re-run" button does), when the App
   * runs in this process: a job of a GitHub build is restarted through it, so its check run follows.
   */
  githubRerun?: ((jobId: string) => Promise<string | undefined>) | undefined;
}

/** What a restart of one job made: the new job, and the build it belongs to (none for a standalone job). */
export interface RestartedJob {
  jobId: string;
  previous: string;
  /** The API build of the job; a GitHub build's is served by the GitHub App, not here. */
  build?: ApiBuild;
  kind: 'api-build' | 'github-build' | 'job';
}

export interface ApiBuilds {
  /** Expands the config and queues the first stage; the same Idempotency-Key returns the first build. */
  create(
    req: BuildRequest,
    who: { clientId: string; idempotencyKey?: string | undefined },
  ): Promise<{ build: ApiBuild; created: boolean; warnings: string[] }>;
  get(id: string): Promise<ApiBuild | undefined>;
  list(f: {
    repo?: string | undefined;
    branch?: string | undefined;
    state?: string | undefined;
    before?: number | undefined;
    limit: number;
  }): Promise<{ builds: ApiBuild[]; next?: number }>;
  cancel(id: string): Promise<ApiBuild>;
  restart(id: string, opts: { failedOnly: boolean }): Promise<ApiBuild>;
  /**
   * A new run of a finished job: of an API build, its slot's next generation; of a GitHub build,
   * the App's re-run (a new check run); a standalone job, a new job of the same spec. The records
   * link the runs (`restartOf`, `restartedBy`).
   */
  restartJob(jobId: string, who: { clientId: string }): Promise<RestartedJob>;
  /** A job of an API build reached a state: its slot is recorded and the build advanced. */
  jobFinished(jobId: string, buildId: string, state: JobState): Promise<void>;
  /** Removes uploads no build used, and those of builds that ended longer ago than the retention. */
  sweepUploads(): Promise<void>;
}

/**
 * The 400 of a config error: `config: ` and the text `config expand` prints after `archway: `
 * (the file's name when read from the source; none for an inline config).
 */
export function configInputError(e: ConfigError, path: string): InvalidInputError {
  return new InvalidInputError('config', configErrorText(e, path === 'config' ? undefined : path));
}

/** A job's short name: its `name:`, else its arch and what sets it apart (`arm64 gcc`, `amd64 A=1`). */
export function slotName(job: ExpandedJob): string {
  return (
    job.name ??
    [
      job.arch,
      ...(job.compiler ? [job.compiler] : []),
      ...(job.version ? [job.version.value] : []),
      ...job.env,
    ]
      .join(' ')
      .slice(0, 200)
  );
}

const isFinal = (s: string) => (FINAL_STATES as readonly string[]).includes(s);

export function createApiBuilds(o: ApiBuildsOptions): ApiBuilds {
  const log = o.logger.child({ component: 'api-builds' });
  const store = createBuildStore(o.redis, o.keys, { job: ExpandedJobRecord, event: BuildEventRecord });

  async function must(id: string): Promise<ApiBuild> {
    const b = await store.get(id);
    if (b?.origin !== 'api') throw new BuildNotFoundError(id);
    return b;
  }

  async function submit(b: ApiBuild, slots: Slot[]): Promise<void> {
    for (const slot of slots) {
      const spec = slotJobSpec({
        job: slot.job,
        event: b.event,
        jobId: slot.jobId,
        build: b,
        sourcePolicy: o.sourcePolicy,
        sourceField: 'source.git',
        egress: o.egress,
      });
      await o.queue.submit(spec, { clientId: b.clientId ?? 'api', jobId: slot.jobId });
    }
  }

  /** The config: inline, or read from the upload or the git source; `sha` is the commit a git source's was read at. */
  async function readConfig(req: BuildRequest): Promise<{ path: string; text: string; sha?: string }> {
    if (req.config !== undefined) return { path: 'config', text: req.config };
    if ('upload' in req.source) {
      const found = await o.uploads.readFile(req.source.upload, CONFIG_FILES);
      if (!found)
        throw new InvalidInputError(
          'config',
          `none given, and the uploaded tree has no ${CONFIG_FILES.join(' or ')} at its top`,
        );
      return found;
    }
    const read = await o.gitConfig.read({
      url: req.source.git,
      ref: req.source.ref,
      sha: req.source.sha,
      files: CONFIG_FILES,
    });
    if (!read.found)
      throw new InvalidInputError(
        'config',
        `none given, and ${req.source.git} at ${read.sha} has no ${CONFIG_FILES.join(' or ')} at its top`,
      );
    return { path: read.path, text: read.text, sha: read.sha };
  }

  return {
    async create(req, who) {
      const requestHash = createHash('sha256').update(JSON.stringify(req)).digest('hex');
      const id = who.idempotencyKey
        ? `b${createHash('sha256').update(`${who.clientId}\0build\0${who.idempotencyKey}`).digest('hex').slice(0, 16)}`
        : `b${randomBytes(8).toString('hex')}`;
      if (who.idempotencyKey) {
        const existing = await store.get(id);
        if (existing) {
          const same = (await o.redis.get(o.keys.idempotency(`build:${id}`))) === requestHash;
          if (!same) throw new IdempotencyConflictError(who.idempotencyKey, id);
          return { build: existing, created: false, warnings: [] };
        }
      }
      // The source: an upload this API holds, or a git URL checked as a job's is.
      let cloneUrl: string;
      let ref = '';
      let sha = '';
      let repo = req.repo;
      if ('upload' in req.source) {
        const up = await o.uploads.get(req.source.upload);
        if (!up)
          throw new InvalidInputError(
            'source.upload',
            `no upload ${req.source.upload} (unknown, or removed)`,
          );
        cloneUrl = `${o.publicUrl().replace(/\/+$/, '')}/git/uploads/${up.id}.git`;
        ref = 'refs/heads/main';
        sha = up.sha;
        repo ??= 'local';
      } else {
        await checkSourceUrl(req.source.git, o.sourcePolicy, 'source.git');
        cloneUrl = req.source.git;
        ref = req.source.ref ?? '';
        sha = req.source.sha ?? '';
        repo ??= parseSourceUrl(req.source.git, o.sourcePolicy, 'source.git').path.replace(/\.git$/, '');
      }
      const config = await readConfig(req);
      // The jobs build the commit the config was read at, even if the ref has moved since.
      if (config.sha) sha = config.sha;
      const event: BuildEvent = {
        type: req.event.type,
        ...(req.event.branch !== undefined ? { branch: req.event.branch } : {}),
        ...(req.event.tag !== undefined ? { tag: req.event.tag } : {}),
        ...(req.event.commitMessage !== undefined ? { commitMessage: req.event.commitMessage } : {}),
        ...(sha ? { commit: sha } : {}),
        repo,
      };
      const expand = (buildNumber: number): ExpandResult => {
        try {
          return expandRepoConfig(config.text, event, {
            buildNumber,
            ...(o.toolchains ? { toolchains: o.toolchains } : {}),
          });
        } catch (e) {
          // Inline: `config: line 7, ...`; from the source: `config: .travis.yml: line 7, ...`.
          if (e instanceof ConfigError) throw configInputError(e, config.path);
          throw e;
        }
      };
      // Checked before a build number is taken or anything is written: a bad config changes nothing.
      const checked = expand(1);
      if (!checked.runs)
        throw new InvalidInputError('config', `the config rules this build out: ${checked.reason ?? ''}`);
      const keep = (j: ExpandedJob) => !j.skipped && (!req.arches || req.arches.includes(j.arch));
      const warnings = [
        ...checked.warnings,
        ...checked.jobs
          .filter((j) => j.skipped)
          .map((j) => `job ${j.number} is not run: ${j.skipReason ?? ''}`),
      ];
      if (!checked.jobs.some(keep))
        throw new InvalidInputError(
          req.arches ? 'arches' : 'config',
          req.arches
            ? `no job of the config runs on ${req.arches.join(', ')} (its jobs: ${[...new Set(checked.jobs.map((j) => j.arch))].join(', ')})`
            : 'the config makes no job archway can run',
        );
      for (const arch of new Set(checked.jobs.filter(keep).map((j) => j.arch)))
        await o.pools.assertEnabled(arch);
      // Every job's spec too (its source URL, env): a job that cannot be submitted changes nothing,
      // rather than leaving a build that starts for ever.
      const upload = 'upload' in req.source ? req.source.upload : undefined;
      for (const job of checked.jobs.filter(keep))
        slotJobSpec({
          job,
          event,
          jobId: jobIdOf(id, 1, 0),
          build: { id, number: 1, repo, cloneUrl, ref, sha, private: false, upload, env: req.env },
          sourcePolicy: o.sourcePolicy,
          sourceField: 'source.git',
          egress: o.egress,
        });

      const number = await store.nextNumber(repo);
      const result = expand(number);
      const runnable = result.jobs.filter(keep);
      const stages = result.stages.filter((st) => runnable.some((j) => j.stage === st));
      const slots: Slot[] = runnable.map((job, i) => ({
        n: i + 1,
        name: slotName(job),
        stageIndex: Math.max(0, stages.indexOf(job.stage)),
        allowFailure: job.allowFailure,
        job,
        gen: 0,
        jobId: jobIdOf(id, i + 1, 0),
        checkKey: `${id}-${i + 1}-0`,
        state: 'waiting',
      }));
      const b: ApiBuild = {
        id,
        number,
        repo,
        repoId: 0,
        installationId: 0,
        sha,
        cloneUrl,
        private: false,
        ref,
        credential: false,
        ...(req.event.branch ? { scope: `push:${req.event.branch}` } : {}),
        autoCancel: false,
        configPath: config.path,
        stages,
        currentStage: 0,
        state: 'starting',
        notes: '',
        ...(req.env ? { env: req.env } : {}),
        createdAt: new Date().toISOString(),
        origin: 'api',
        fastFinish: result.fastFinish,
        clientId: who.clientId,
        ...('upload' in req.source ? { upload: req.source.upload } : {}),
        event,
        slots,
      };
      await store.create(b);
      if (who.idempotencyKey)
        await o.redis.set(o.keys.idempotency(`build:${id}`), requestHash, 'EX', 30 * 86_400);
      if (b.upload) await o.uploads.claim(b.upload, b.id);
      await submit(
        b,
        b.slots.filter((s) => s.stageIndex === 0),
      );
      const started = await store.update(b.id, startStages);
      log.info({ build: id, repo, jobs: slots.length, client: who.clientId }, 'build started');
      return { build: started?.after ?? b, created: true, warnings };
    },
    get: async (id) => {
      const b = await store.get(id);
      return b?.origin === 'api' ? b : undefined;
    },
    list: (f) =>
      store.list({
        before: f.before,
        limit: f.limit,
        where: (b) =>
          (!f.repo || b.repo === f.repo) &&
          (!f.branch || b.event.branch === f.branch) &&
          (!f.state || b.state === f.state),
      }),
    async cancel(id) {
      await must(id);
      let running: Slot[] = [];
      const changed = await store.update(id, (b) => {
        const c = cancelStages(b, new Date().toISOString());
        running = c?.running ?? [];
        return c?.build;
      });
      if (!changed) throw new BuildNotFoundError(id);
      if (changed.before === changed.after)
        throw new BuildConflictError(`build ${id} has already finished (${changed.before.state})`);
      for (const slot of running) {
        await o.queue.cancel(slot.jobId).catch((e: unknown) => {
          if (!(e instanceof JobFinishedError))
            log.warn({ job: slot.jobId, err: toError(e).message }, 'cancel failed');
        });
      }
      return changed.after;
    },
    async restart(id, opts) {
      const b = await must(id);
      if (b.upload && !(await o.uploads.get(b.upload)))
        throw new BuildConflictError(
          `build ${id}: its uploaded tree was removed after the build ended; build again`,
        );
      let queue: Slot[] = [];
      const changed = await store.update(id, (x) => {
        const r = restartStages(x, opts);
        queue = r?.queue ?? [];
        return r?.build;
      });
      if (!changed) throw new BuildNotFoundError(id);
      if (changed.before === changed.after) {
        throw new BuildConflictError(
          isFinal(b.state) || b.state === 'passed' || b.state === 'failed' || b.state === 'canceled'
            ? `build ${id}: no job to run again${opts.failedOnly ? ' (every job passed)' : ''}`
            : `build ${id} is still ${b.state}: cancel it or wait for it to finish`,
        );
      }
      await submit(changed.after, queue);
      log.info({ build: id, jobs: queue.length, failedOnly: opts.failedOnly }, 'build restarted');
      return changed.after;
    },
    async restartJob(jobId, who) {
      const job = await o.queue.get(jobId);
      if (!job) throw new JobNotFoundError(jobId);
      if (!isFinal(job.state))
        throw new JobNotRestartableError(
          jobId,
          `is still ${job.state}: it can be restarted once it has finished`,
        );
      const buildId = job.labels.build;
      const b = buildId ? await store.get(buildId) : undefined;
      // A standalone job (or one whose build record has gone): a new job of the same spec.
      if (!b) {
        const made = await o.queue.restart(jobId, who);
        log.info({ job: made.job.id, of: jobId }, 'job restarted');
        return { jobId: made.job.id, previous: jobId, kind: 'job' };
      }
      if (b.origin === 'github') {
        if (!o.githubRerun)
          throw new JobNotRestartableError(
            jobId,
            'is of a GitHub build, and the GitHub App does not run in this API: re-run it from its check run',
          );
        const newId = await o.githubRerun(jobId);
        if (!newId)
          throw new JobNotRestartableError(
            jobId,
            'cannot be restarted: it is not the newest run of its job, or its stage has not been reached',
          );
        await o.queue.linkRestart(jobId, newId);
        return { jobId: newId, previous: jobId, kind: 'github-build' };
      }
      if (b.upload && !(await o.uploads.get(b.upload)))
        throw new BuildConflictError(
          `build ${b.id}: its uploaded tree was removed after the build ended; build again`,
        );
      let slot: Slot | undefined;
      const changed = await store.update(b.id, (x) => {
        const r = rerun(x, jobId);
        slot = r?.slot;
        return r?.build;
      });
      if (!changed || !slot || changed.before === changed.after)
        throw new JobNotRestartableError(
          jobId,
          'cannot be restarted: it is not the newest run of its job, or its stage has not been reached',
        );
      await submit(changed.after, [slot]);
      await o.queue.linkRestart(jobId, slot.jobId);
      return { build: changed.after, jobId: slot.jobId, previous: jobId, kind: 'api-build' };
    },
    async jobFinished(jobId, buildId, state) {
      if (!isFinal(state)) return;
      const changed = await store.update(buildId, (b) =>
        b.origin === 'api' ? finishJob(b, jobId, state) : undefined,
      );
      if (changed?.after.origin !== 'api') return;
      let queue: Slot[] = [];
      const advanced = await store.update(buildId, (b) => {
        const a = advance(b, new Date().toISOString());
        queue = a?.queue ?? [];
        return a?.build;
      });
      if (!advanced || advanced.before === advanced.after) return;
      if (queue.length > 0) await submit(advanced.after, queue);
      if (advanced.after.state !== 'running')
        log.info({ build: buildId, state: advanced.after.state }, 'build finished');
    },
    async sweepUploads() {
      await o.uploads.sweep();
      // Uploads of builds that ended longer ago than the retention.
      const { builds } = await store.list({
        limit: 200,
        where: (b) =>
          b.origin === 'api' &&
          b.upload !== undefined &&
          b.finishedAt !== undefined &&
          Date.now() - Date.parse(b.finishedAt) > o.uploadRetentionMs,
      });
      for (const b of builds) if (b.upload) await o.uploads.remove(b.upload);
    },
  };
}
