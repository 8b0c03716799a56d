import { createHash, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { JobFinishedError, type JobQueue } from '../../queue/index.ts';
import {
  FINAL_STATES,
  JobSpec,
  type JobState,
  type Keys,
  type Logger,
  parseSourceUrl,
  type SourceUrlPolicy,
  sourceBuildDir,
  toError,
  VISIBILITY_LABEL,
} from '../../src/core/index.ts';
import {
  type BuildEvent,
  buildJobScript,
  ConfigError,
  type ExpandedJob,
  type ExpandResult,
  expandRepoConfig,
  type IgnoredKey,
  type ImageToolchain,
} from '../repo-config/index.ts';
import type { CheckRuns, CheckRunTarget, CheckRunUpdate } from './check-runs.ts';
import type { GitHubClient } from './github-client.ts';

/** The config files read at the commit, in order: the first that exists is used. */
export const CONFIG_FILES = ['.archway.yml', '.travis.yml'] as const;

/** How long a commit's claim stops a second event from building it again (push and check_suite both ask). */
const CLAIM_TTL_S = 7 * 86_400;
/** How long a build record is kept after its last change. */
const BUILD_TTL_S = 30 * 86_400;

const SlotState = z.enum([
  'waiting',
  'queued',
  'running',
  'passed',
  'failed',
  'errored',
  'canceled',
  'skipped',
]);

/** One job of a build: its place, its current job (a re-run makes a new generation) and its check run. */
const BuildSlot = z.object({
  n: z.int().positive(),
  name: z.string(),
  stageIndex: z.int().nonnegative(),
  allowFailure: z.boolean(),
  /** The expanded job (written by archway: read back as it was written). */
  job: z.record(z.string(), z.unknown()),
  gen: z.int().nonnegative(),
  jobId: z.string(),
  checkKey: z.string(),
  state: SlotState,
});
type BuildSlot = z.infer<typeof BuildSlot>;

/** A build made from a webhook: what is needed to advance its stages, re-run it, cancel it. */
export const BuildRecord = z.object({
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
  event: z.record(z.string(), z.unknown()),
  /** `push:<branch>` or `pr:<number>`: a newer build of the same scope supersedes this one. */
  scope: z.string().optional(),
  autoCancel: z.boolean(),
  configPath: z.string(),
  stages: z.array(z.string()),
  currentStage: z.int().nonnegative(),
  state: z.enum(['starting', 'running', 'passed', 'failed', 'canceled']),
  /** Markdown added to every check run's summary: ignored keys, warnings. */
  notes: z.string(),
  createdAt: z.string(),
  slots: z.array(BuildSlot),
});
export type BuildRecord = z.infer<typeof BuildRecord>;

/** What a build is started from (a push, a pull request, a check suite's request). */
export interface BuildInput {
  repo: { id: number; fullName: string };
  installationId: number;
  sha: string;
  cloneUrl: string;
  /** GitHub's `repository.private`. Default false. */
  private?: boolean;
  ref: string;
  event: BuildEvent;
  /** `push:<branch>` / `pr:<n>`; none for tags. */
  scope?: string | undefined;
  /** The source comes from a fork: no token is given for it. */
  fork: boolean;
}

export interface BuildsOptions {
  redis: Redis;
  keys: Keys;
  queue: JobQueue;
  github: GitHubClient;
  checks: CheckRuns;
  logger: Logger;
  /** The API's address as users reach it: check runs link to `<url>/v1/jobs/<id>/log`. */
  publicUrl: () => string;
  /** A job's page (a signed link to its live log), which check runs' `details_url` then opens instead. */
  jobPageUrl?: (jobId: string) => string;
  /** Default of auto-cancel for repos that do not say (`archway: { auto_cancel: ... }`). */
  autoCancel: boolean;
  sourcePolicy: SourceUrlPolicy;
  /** What images provide (from their recipes): expansion warns about compilers and versions they lack. Default: none known. */
  toolchains?: Readonly<Record<string, ImageToolchain>> | undefined;
  /** Whether jobs get `network: egress`; `false` (the operator turned it off) gives them `none`. */
  egress: boolean;
}

export interface Builds {
  /** Reads the config at the commit, expands it and starts the build; `force` builds a commit already built (re-run of a suite). */
  start(input: BuildInput, opts?: { force?: boolean }): Promise<BuildRecord | undefined>;
  /** A job of a build reached a final state: its slot is recorded and the next stage is queued when this one passed. */
  jobFinished(jobId: string, buildId: string, state: JobState): Promise<void>;
  /** Cancels a build's queued and running jobs; its jobs not yet started are reported cancelled. */
  cancel(buildId: string, reason: 'canceled' | 'superseded', by?: BuildRecord): Promise<void>;
  /** Runs one job of a build again: a new job and a new check run of the same name. */
  rerunJob(jobId: string): Promise<string | undefined>;
  /** Runs every job of the newest build of a commit again: a new build of the same event. */
  rerunCommit(repo: string, sha: string): Promise<BuildRecord | undefined>;
  get(buildId: string): Promise<BuildRecord | undefined>;
  /** Renews the source tokens of jobs that may still need them, and drops the others. */
  renewCredentials(): Promise<void>;
  /** The check run key and target of a slot, for the reporter. */
  target(build: BuildRecord, slot: { n: number; name: string; checkKey: string }): CheckRunTarget;
  slotOf(build: BuildRecord, jobId: string): BuildSlot | undefined;
  /** A job check run's summary. */
  summary(build: BuildRecord, slot: BuildSlot, line: string): string;
}

/** A job's id, fixed before it is submitted (its script and its check run name it). */
export function jobIdOf(buildId: string, n: number, gen: number): string {
  return `j${createHash('sha256').update(`${buildId}\0${n}\0${gen}`).digest('hex').slice(0, 24)}`;
}

function short(sha: string): string {
  return sha.slice(0, 7);
}

/** `push to main`, `pull request #5 (feature -> main)`, `tag v1.2`. */
function describeEvent(e: BuildEvent): string {
  if (e.type === 'pull_request')
    return `pull request #${e.pullRequest ?? '?'} (${e.headRepo && e.headRepo !== e.repo ? `${e.headRepo}:` : ''}${e.headBranch ?? '?'} -> ${e.branch ?? '?'})`;
  if (e.tag) return `tag ${e.tag}`;
  return `${e.type} to ${e.branch ?? '?'}`;
}

/** A check run's name: the job's name, else its arch and variables; the stage when the build has several. */
function checkName(job: ExpandedJob, multiStage: boolean): string {
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

function ignoredNotes(ignored: IgnoredKey[], warnings: string[]): string {
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

const CANCEL_ACTION = [
  { label: 'Cancel', identifier: 'cancel', description: 'Cancel this job' },
] as CheckRunUpdate['actions'];

export function createBuilds(o: BuildsOptions): Builds {
  const log = o.logger.child({ component: 'builds' });

  async function get(id: string): Promise<BuildRecord | undefined> {
    const raw = await o.redis.get(o.keys.build(id));
    if (!raw) return undefined;
    const parsed = BuildRecord.safeParse(JSON.parse(raw));
    if (!parsed.success)
      throw new Error(`build ${id}: stored record is invalid: ${parsed.error.issues[0]?.message}`);
    return parsed.data;
  }

  async function save(b: BuildRecord): Promise<void> {
    await o.redis.set(o.keys.build(b.id), JSON.stringify(b), 'EX', BUILD_TTL_S);
  }

  /** Changes a build under WATCH: concurrent changes (the reporter, a re-run, a cancel) never overwrite each other. */
  async function mutate(
    id: string,
    fn: (b: BuildRecord) => BuildRecord | undefined,
  ): Promise<{ before: BuildRecord; after: BuildRecord } | undefined> {
    const key = o.keys.build(id);
    for (let i = 0; i < 20; i++) {
      await o.redis.watch(key);
      const before = await get(id);
      if (!before) {
        await o.redis.unwatch();
        return undefined;
      }
      const after = fn(structuredClone(before));
      if (!after) {
        await o.redis.unwatch();
        return { before, after: before };
      }
      const ok = await o.redis.multi().set(key, JSON.stringify(after), 'EX', BUILD_TTL_S).exec();
      if (ok) return { before, after };
    }
    throw new Error(`build ${id}: too much contention`);
  }

  const target = (b: BuildRecord, slot: { name: string; checkKey: string }): CheckRunTarget => ({
    key: slot.checkKey,
    repo: b.repo,
    installationId: b.installationId,
    headSha: b.sha,
    name: slot.name,
  });

  const logUrl = (jobId: string) =>
    o.jobPageUrl?.(jobId) ?? `${o.publicUrl().replace(/\/+$/, '')}/v1/jobs/${jobId}/log`;

  function summary(b: BuildRecord, slot: BuildSlot, line: string): string {
    const job = slot.job as unknown as ExpandedJob;
    const event = b.event as unknown as BuildEvent;
    const head = [
      `**Job ${job.number}** of build #${b.number}: ${describeEvent(event)} at \`${short(b.sha)}\``,
      `${job.arch}${job.configArch !== job.arch ? ` (\`arch: ${job.configArch}\`)` : ''}, image \`${job.image}\`, stage \`${job.stage}\`${slot.allowFailure ? ', allowed to fail' : ''}${job.env.length ? `, env \`${job.env.join(' ')}\`` : ''}`,
      line,
      `Log: ${logUrl(slot.jobId)}`,
    ].join('\n\n');
    return b.notes ? `${head}\n\n${b.notes}` : head;
  }

  function specOf(b: BuildRecord, slot: BuildSlot): JobSpec {
    const job = slot.job as unknown as ExpandedJob;
    const src = parseSourceUrl(b.cloneUrl, o.sourcePolicy, 'repository.clone_url');
    return JobSpec.parse({
      arch: job.arch,
      image: job.image,
      script: buildJobScript(job, {
        event: b.event as unknown as BuildEvent,
        jobId: slot.jobId,
        buildNumber: b.number,
        buildId: b.id,
        buildDir: sourceBuildDir(src.path),
      }),
      source: { git: b.cloneUrl, ref: b.ref, sha: b.sha },
      // Travis jobs had network: builds from a repository get egress unless the operator forbids it.
      network: o.egress ? 'egress' : 'none',
      labels: {
        repo: b.repo,
        sha: b.sha,
        build: b.id,
        build_number: String(b.number),
        job_number: job.number,
        stage: job.stage,
        event: (b.event as { type?: string }).type ?? 'push',
        ...(b.private ? { [VISIBILITY_LABEL]: 'private' } : {}),
      },
    });
  }

  /** Stores the job's source token where its worker reads it, with the token's expiry. */
  async function storeCredentials(b: BuildRecord, jobIds: string[]): Promise<void> {
    if (!b.credential || jobIds.length === 0) return;
    const t = await o.github.sourceToken(b.installationId, b.repoId);
    const host = parseSourceUrl(b.cloneUrl, o.sourcePolicy, 'repository.clone_url').host;
    const ttlMs = Math.max(60_000, t.expiresAt - Date.now() - 60_000);
    const value = JSON.stringify({
      host,
      token: t.token,
      installationId: b.installationId,
      repositoryId: b.repoId,
      since: Date.now(),
    });
    const m = o.redis.multi();
    for (const id of jobIds) {
      m.set(o.keys.sourceCredential(id), value, 'PX', ttlMs);
      m.zadd(o.keys.sourceCredentials, Date.now() + ttlMs, id);
    }
    await m.exec();
  }

  async function dropCredentials(jobIds: string[]): Promise<void> {
    if (jobIds.length === 0) return;
    await o.redis
      .multi()
      .del(...jobIds.map((id) => o.keys.sourceCredential(id)))
      .zrem(o.keys.sourceCredentials, ...jobIds)
      .exec();
  }

  async function submit(b: BuildRecord, slot: BuildSlot): Promise<void> {
    await o.queue.submit(specOf(b, slot), { clientId: 'github', jobId: slot.jobId });
  }

  async function readConfig(input: BuildInput): Promise<{ path: string; text: string } | undefined> {
    const [owner, repo] = input.repo.fullName.split('/') as [string, string];
    const client = await o.github.installation(input.installationId);
    for (const path of CONFIG_FILES) {
      try {
        const r = await client.request('GET /repos/{owner}/{repo}/contents/{path}', {
          owner,
          repo,
          path,
          ref: input.sha,
        });
        const data = r.data as { type?: string; content?: string; encoding?: string };
        if (data.type !== 'file' || typeof data.content !== 'string') continue;
        const text =
          data.encoding === 'base64' ? Buffer.from(data.content, 'base64').toString('utf8') : data.content;
        return { path, text };
      } catch (e) {
        if ((e as { status?: number }).status === 404) continue;
        throw e;
      }
    }
    return undefined;
  }

  async function configError(
    input: BuildInput,
    buildId: string,
    path: string,
    err: ConfigError,
  ): Promise<void> {
    const where =
      err.line !== undefined
        ? `${path}, line ${err.line}${err.column ? `, column ${err.column}` : ''}`
        : path;
    const excerpt =
      err.excerpt !== undefined && err.line !== undefined
        ? `\n\n\`\`\`yaml\n${err.line} | ${err.excerpt}\n${' '.repeat(String(err.line).length + 3 + Math.max(0, (err.column ?? 1) - 1))}^\n\`\`\``
        : '';
    await o.checks.update(
      {
        key: `config-${buildId}`,
        repo: input.repo.fullName,
        installationId: input.installationId,
        headSha: input.sha,
        name: 'archway: config',
      },
      {
        status: 'completed',
        conclusion: 'failure',
        completedAt: new Date().toISOString(),
        title: `${path} is not valid: nothing was built`,
        summary: `**${where}**: ${err.keyPath ? `\`${err.keyPath}\`: ` : ''}${err.detail}${excerpt}\n\nThe config format: docs/repo-config.md.`,
      },
    );
  }

  async function start(input: BuildInput, opts: { force?: boolean } = {}): Promise<BuildRecord | undefined> {
    const repo = input.repo.fullName;
    const scope = input.scope ?? `ref:${input.ref}`;
    const claimKey = o.keys.buildClaim(repo, input.sha, scope);
    const lockKey = o.keys.buildClaimLock(repo, input.sha, scope);
    let id = `b${randomBytes(8).toString('hex')}`;
    if (opts.force) {
      await o.redis.set(claimKey, id, 'EX', CLAIM_TTL_S);
    } else if ((await o.redis.set(claimKey, id, 'EX', CLAIM_TTL_S, 'NX')) === null) {
      const existing = (await o.redis.get(claimKey)) ?? id;
      const b = await get(existing);
      if (b && b.state !== 'starting') {
        log.info({ repo, sha: input.sha, build: b.id }, 'commit already built for this branch: nothing new');
        return b;
      }
      // Not started yet: a retry of this event (or another event) takes over, unless one is starting it now.
      id = existing;
    }
    const me = randomBytes(8).toString('hex');
    if ((await o.redis.set(lockKey, me, 'PX', 120_000, 'NX')) === null) {
      throw new Error(
        `build ${id} of ${repo}@${short(input.sha)} is being started by another event; tried again later`,
      );
    }
    try {
      return await startClaimed(input, id);
    } finally {
      await o.redis
        .eval(
          "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
          1,
          lockKey,
          me,
        )
        .catch(() => undefined);
    }
  }

  async function startClaimed(input: BuildInput, id: string): Promise<BuildRecord | undefined> {
    const repo = input.repo.fullName;

    let b = await get(id);
    if (!b) {
      const found = await readConfig(input);
      if (!found) {
        log.info({ repo, sha: input.sha }, `no ${CONFIG_FILES.join(' or ')} at the commit: no build`);
        return undefined;
      }
      const number = await o.redis.incr(o.keys.buildNumber(repo));
      let result: ExpandResult;
      try {
        result = expandRepoConfig(found.text, input.event, {
          buildNumber: number,
          ...(o.toolchains ? { toolchains: o.toolchains } : {}),
        });
      } catch (e) {
        if (!(e instanceof ConfigError)) throw e;
        log.info({ repo, sha: input.sha, err: e.message }, 'config error: one failed check run');
        await configError(input, id, found.path, e);
        return undefined;
      }
      if (!result.runs) {
        log.info({ repo, sha: input.sha, reason: result.reason }, 'the config rules this build out');
        return undefined;
      }
      // The source URL is checked before anything is queued: a webhook job fetches only from the configured GitHub.
      const src = parseSourceUrl(input.cloneUrl, o.sourcePolicy, 'repository.clone_url');
      if (src.host !== o.github.gitHost) {
        throw new Error(
          `clone URL ${input.cloneUrl} is not on the configured GitHub host ${o.github.gitHost}`,
        );
      }
      const runnable = result.jobs.filter((j) => !j.skipped);
      const multiStage = result.stages.length > 1;
      const names = new Map<string, number>();
      const slots: BuildSlot[] = runnable.map((job, i) => {
        let name = checkName(job, multiStage);
        const seen = names.get(name) ?? 0;
        names.set(name, seen + 1);
        if (seen > 0) name = `${name} (${seen + 1})`;
        const n = i + 1;
        return {
          n,
          name,
          stageIndex: Math.max(0, result.stages.indexOf(job.stage)),
          allowFailure: job.allowFailure,
          job: job as unknown as Record<string, unknown>,
          gen: 0,
          jobId: jobIdOf(id, n, 0),
          checkKey: `${id}-${n}-0`,
          state: 'waiting',
        };
      });
      b = {
        id,
        number,
        repo,
        repoId: input.repo.id,
        installationId: input.installationId,
        sha: input.sha,
        cloneUrl: input.cloneUrl,
        private: input.private ?? false,
        ref: input.ref,
        credential: !input.fork,
        event: input.event as unknown as Record<string, unknown>,
        ...(input.scope ? { scope: input.scope } : {}),
        autoCancel: result.settings?.autoCancel ?? o.autoCancel,
        configPath: found.path,
        stages: result.stages,
        currentStage: 0,
        state: 'starting',
        notes: ignoredNotes(result.ignored, result.warnings),
        createdAt: new Date().toISOString(),
        slots,
      };
      await save(b);
      await o.redis.rpush(o.keys.buildsOfSha(repo, input.sha), id);
      await o.redis.expire(o.keys.buildsOfSha(repo, input.sha), BUILD_TTL_S);
      // Jobs that cannot run are shown, concluded skipped with the reason: what runs never changes silently.
      const skipped = result.jobs.filter((j) => j.skipped);
      for (const [i, job] of skipped.entries()) {
        await o.checks.update(
          {
            key: `${id}-skipped-${i + 1}`,
            repo,
            installationId: input.installationId,
            headSha: input.sha,
            name: checkName(job, multiStage),
          },
          {
            status: 'completed',
            conclusion: 'skipped',
            completedAt: new Date().toISOString(),
            title: `Skipped: ${job.skipReason ?? 'archway cannot run this job'}`,
            summary: `**Job ${job.number}** of build #${number} (${job.os}) is not run: ${job.skipReason ?? 'archway cannot run it'}.${b.notes ? `\n\n${b.notes}` : ''}`,
          },
        );
      }
    }

    // Resumable from here: each step is idempotent (fixed job ids, check runs keyed by slot).
    await storeCredentials(
      b,
      b.slots.map((s) => s.jobId),
    );
    for (const slot of b.slots) {
      const first = slot.stageIndex === 0;
      await o.checks.update(target(b, slot), {
        status: 'queued',
        externalId: slot.jobId,
        detailsUrl: logUrl(slot.jobId),
        title: first ? 'Queued' : `Waits for stage ${b.stages[slot.stageIndex - 1] ?? ''}`,
        summary: summary(
          b,
          slot,
          first ? 'Queued.' : `Runs when every job of stage \`${b.stages[slot.stageIndex - 1]}\` has passed.`,
        ),
        actions: CANCEL_ACTION,
      });
    }
    for (const slot of b.slots.filter((s) => s.stageIndex === 0)) await submit(b, slot);
    const started = await mutate(b.id, (x) => {
      x.state = 'running';
      for (const s of x.slots) if (s.stageIndex === 0 && s.state === 'waiting') s.state = 'queued';
      return x;
    });
    const built = started?.after ?? b;
    log.info(
      { repo, sha: input.sha, build: built.id, number: built.number, jobs: built.slots.length },
      'build started',
    );

    // Auto-cancel: this build supersedes the older one of the same branch or pull request.
    if (built.scope) {
      const previous = await o.redis.getset(o.keys.buildLatest(repo, built.scope), built.id);
      if (previous && previous !== built.id && built.autoCancel) await cancel(previous, 'superseded', built);
    }
    return built;
  }

  async function cancel(buildId: string, reason: 'canceled' | 'superseded', by?: BuildRecord): Promise<void> {
    const changed = await mutate(buildId, (b) => {
      if (b.state === 'passed' || b.state === 'failed' || b.state === 'canceled') return undefined;
      b.state = 'canceled';
      return b;
    });
    if (!changed || changed.before.state === changed.after.state) return;
    const b = changed.after;
    const why =
      reason === 'superseded'
        ? `Superseded by build #${by?.number ?? '?'} (\`${short(by?.sha ?? '')}\`)`
        : 'Canceled';
    log.info({ build: b.id, by: by?.id, reason }, 'canceling a build');
    for (const slot of b.slots) {
      if (slot.state === 'queued' || slot.state === 'running') {
        await o.queue.cancel(slot.jobId, { reason }).catch((e: unknown) => {
          if (!(e instanceof JobFinishedError))
            log.warn({ job: slot.jobId, err: toError(e).message }, 'cancel failed');
        });
      } else if (slot.state === 'waiting') {
        await o.checks.update(target(b, slot), {
          status: 'completed',
          conclusion: 'cancelled',
          completedAt: new Date().toISOString(),
          title: why,
          summary: summary(b, slot, `${why}: not run.`),
          actions: [],
        });
      }
    }
    await dropCredentials(b.slots.filter((s) => s.state === 'waiting').map((s) => s.jobId));
  }

  async function jobFinished(jobId: string, buildId: string, state: JobState): Promise<void> {
    if (!FINAL_STATES.includes(state)) return;
    await dropCredentials([jobId]);
    const changed = await mutate(buildId, (b) => {
      const slot = b.slots.find((s) => s.jobId === jobId);
      if (!slot || slot.state === state) return undefined;
      slot.state = state;
      return b;
    });
    if (!changed) return;
    await advance(buildId);
  }

  /** Queues the next stage when every job of the current one has finished and passed (allow_failure excepted). */
  async function advance(buildId: string): Promise<void> {
    let next: BuildSlot[] = [];
    let blocked: BuildSlot[] = [];
    let failedStage = '';
    const changed = await mutate(buildId, (b) => {
      if (b.state !== 'running') return undefined;
      const current = b.slots.filter((s) => s.stageIndex === b.currentStage);
      const final = (s: BuildSlot) => (FINAL_STATES as readonly string[]).includes(s.state);
      if (!current.every(final)) return undefined;
      const ok = current.every((s) => s.state === 'passed' || s.allowFailure);
      next = [];
      blocked = [];
      if (!ok) {
        failedStage = b.stages[b.currentStage] ?? '';
        blocked = b.slots.filter((s) => s.stageIndex > b.currentStage && s.state === 'waiting');
        for (const s of blocked) s.state = 'skipped';
        b.state = 'failed';
        return b;
      }
      if (b.currentStage + 1 >= b.stages.length || !b.slots.some((s) => s.stageIndex > b.currentStage)) {
        b.state = 'passed';
        return b;
      }
      b.currentStage += 1;
      next = b.slots.filter((s) => s.stageIndex === b.currentStage);
      for (const s of next) {
        if (s.state === 'skipped') {
          // Its check run was concluded when an earlier stage failed: a re-run made the stage pass, so a new one.
          s.gen += 1;
          s.jobId = jobIdOf(b.id, s.n, s.gen);
          s.checkKey = `${b.id}-${s.n}-${s.gen}`;
        }
        s.state = 'queued';
      }
      return b;
    });
    if (!changed) return;
    const b = changed.after;
    for (const slot of blocked) {
      await o.checks.update(target(b, slot), {
        status: 'completed',
        conclusion: 'skipped',
        completedAt: new Date().toISOString(),
        title: `Not run: stage ${failedStage} failed`,
        summary: summary(b, slot, `Not run: a job of stage \`${failedStage}\` did not pass.`),
        actions: [],
      });
    }
    if (blocked.length > 0) await dropCredentials(blocked.map((s) => s.jobId));
    if (next.length > 0) {
      await storeCredentials(
        b,
        next.map((s) => s.jobId),
      );
      for (const slot of next) {
        await o.checks.update(target(b, slot), {
          status: 'queued',
          externalId: slot.jobId,
          detailsUrl: logUrl(slot.jobId),
          title: 'Queued',
          summary: summary(b, slot, 'Queued.'),
          actions: CANCEL_ACTION,
        });
        await submit(b, slot);
      }
      log.info({ build: b.id, stage: b.stages[b.currentStage], jobs: next.length }, 'next stage queued');
    }
  }

  async function rerunJob(jobId: string): Promise<string | undefined> {
    const labels = await o.redis.hget(o.keys.job(jobId), 'labels');
    const buildId = labels ? (JSON.parse(labels) as Record<string, string>).build : undefined;
    if (!buildId) return undefined;
    let slot: BuildSlot | undefined;
    const changed = await mutate(buildId, (b) => {
      const s = b.slots.find((x) => x.jobId === jobId);
      // Only a finished job of a stage that has been reached is run again.
      if (!s || !(FINAL_STATES as readonly string[]).includes(s.state) || s.stageIndex > b.currentStage)
        return undefined;
      s.gen += 1;
      s.jobId = jobIdOf(b.id, s.n, s.gen);
      s.checkKey = `${b.id}-${s.n}-${s.gen}`;
      s.state = 'queued';
      if (b.state === 'failed' || b.state === 'passed') b.state = 'running';
      slot = s;
      return b;
    });
    if (!changed || !slot || changed.before === changed.after) return undefined;
    const b = changed.after;
    await storeCredentials(b, [slot.jobId]);
    await o.checks.update(target(b, slot), {
      status: 'queued',
      externalId: slot.jobId,
      detailsUrl: logUrl(slot.jobId),
      title: 'Queued (re-run)',
      summary: summary(b, slot, `Re-run of job \`${jobId}\`.`),
      actions: CANCEL_ACTION,
    });
    await submit(b, slot);
    log.info({ build: b.id, job: slot.jobId, of: jobId }, 'job re-run');
    return slot.jobId;
  }

  async function rerunCommit(repo: string, sha: string): Promise<BuildRecord | undefined> {
    const ids = await o.redis.lrange(o.keys.buildsOfSha(repo, sha), -1, -1);
    const last = ids[0] ? await get(ids[0]) : undefined;
    if (!last) return undefined;
    return start(
      {
        repo: { id: last.repoId, fullName: last.repo },
        installationId: last.installationId,
        sha: last.sha,
        cloneUrl: last.cloneUrl,
        private: last.private,
        ref: last.ref,
        event: last.event as unknown as BuildEvent,
        scope: last.scope,
        fork: !last.credential,
      },
      { force: true },
    );
  }

  async function renewCredentials(): Promise<void> {
    const soon = Date.now() + 20 * 60_000;
    const ids = await o.redis.zrangebyscore(o.keys.sourceCredentials, '-inf', soon, 'LIMIT', 0, 500);
    for (const id of ids) {
      const raw = await o.redis.get(o.keys.sourceCredential(id));
      const state = await o.redis.hget(o.keys.job(id), 'state');
      const c = raw
        ? (JSON.parse(raw) as { host: string; installationId: number; repositoryId: number; since: number })
        : undefined;
      // Kept for jobs that wait (or wait for their stage) for up to a day; then dropped.
      if (
        !c ||
        (state && (FINAL_STATES as readonly string[]).includes(state)) ||
        Date.now() - c.since > 86_400_000
      ) {
        await dropCredentials([id]);
        continue;
      }
      try {
        const t = await o.github.sourceToken(c.installationId, c.repositoryId);
        const ttlMs = Math.max(60_000, t.expiresAt - Date.now() - 60_000);
        await o.redis
          .multi()
          .set(o.keys.sourceCredential(id), JSON.stringify({ ...c, token: t.token }), 'PX', ttlMs)
          .zadd(o.keys.sourceCredentials, Date.now() + ttlMs, id)
          .exec();
      } catch (e) {
        log.warn({ job: id, err: toError(e).message }, 'could not renew a source token; tried again later');
      }
    }
  }

  return {
    start,
    jobFinished,
    cancel,
    rerunJob,
    rerunCommit,
    get,
    renewCredentials,
    target,
    slotOf: (b, jobId) => b.slots.find((s) => s.jobId === jobId),
    summary,
  };
}
