import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import {
  type Advance,
  advance,
  cancelStages,
  createBuildStore,
  finishJob,
  JobFinishedError,
  type JobQueue,
  jobIdOf,
  rerun,
  startStages,
} from '../../queue/index.ts';
import {
  FINAL_STATES,
  type JobState,
  type Keys,
  type Logger,
  parseSourceUrl,
  type SourceUrlPolicy,
  toError,
} from '../../src/core/index.ts';
import {
  type BuildEvent,
  BuildEventRecord,
  ConfigError,
  type ExpandedJob,
  ExpandedJobRecord,
  type ExpandResult,
  expandRepoConfig,
  type ImageToolchain,
  slotJobSpec,
} from '../repo-config/index.ts';
import {
  CANCEL_ACTION,
  checkName,
  configErrorUpdate,
  type GitHubBuild,
  type GitHubSlot,
  ignoredNotes,
  jobSummary,
  short,
} from './check-run-text.ts';
import type { CheckRuns, CheckRunTarget } from './check-runs.ts';
import type { GitHubClient } from './github-client.ts';
import { CONFIG_FILES, readRepoConfig } from './read-repo-config.ts';
import { createSourceTokens } from './source-tokens.ts';

/** A build of the GitHub App (see queue's build store). */
export type BuildRecord = GitHubBuild;
type BuildSlot = GitHubSlot;

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

export function createBuilds(o: BuildsOptions): Builds {
  const log = o.logger.child({ component: 'builds' });
  const tokens = createSourceTokens({
    redis: o.redis,
    keys: o.keys,
    jobs: o.queue.store,
    github: o.github,
    sourcePolicy: o.sourcePolicy,
    logger: o.logger,
  });

  const store = createBuildStore(o.redis, o.keys, { job: ExpandedJobRecord, event: BuildEventRecord });
  const get = (id: string) => store.get(id);
  const mutate = store.update;

  const target = (b: BuildRecord, slot: { name: string; checkKey: string }): CheckRunTarget => ({
    key: slot.checkKey,
    repo: b.repo,
    installationId: b.installationId,
    headSha: b.sha,
    name: slot.name,
  });

  const logUrl = (jobId: string) =>
    o.jobPageUrl?.(jobId) ?? `${o.publicUrl().replace(/\/+$/, '')}/v1/jobs/${jobId}/log`;

  const summary = (b: BuildRecord, slot: BuildSlot, line: string) =>
    jobSummary(b, slot, line, logUrl(slot.jobId));

  const specOf = (b: BuildRecord, slot: BuildSlot) =>
    slotJobSpec({
      job: slot.job,
      event: b.event,
      jobId: slot.jobId,
      build: b,
      sourcePolicy: o.sourcePolicy,
      sourceField: 'repository.clone_url',
      egress: o.egress,
    });

  /** Stores the jobs' source token where their workers read it (not for forks). */
  async function storeCredentials(b: BuildRecord, jobIds: string[]): Promise<void> {
    if (!b.credential) return;
    await tokens.issue({ installationId: b.installationId, repoId: b.repoId, cloneUrl: b.cloneUrl }, jobIds);
  }

  const dropCredentials = (jobIds: string[]) => tokens.drop(jobIds);

  async function submit(b: BuildRecord, slot: BuildSlot): Promise<void> {
    await o.queue.submit(specOf(b, slot), { clientId: 'github', jobId: slot.jobId });
  }

  async function configError(input: BuildInput, buildId: string, path: string, err: ConfigError) {
    await o.checks.update(
      {
        key: `config-${buildId}`,
        repo: input.repo.fullName,
        installationId: input.installationId,
        headSha: input.sha,
        name: 'archway: config',
      },
      configErrorUpdate(path, err, new Date().toISOString()),
    );
  }

  async function start(input: BuildInput, opts: { force?: boolean } = {}): Promise<BuildRecord | undefined> {
    const repo = input.repo.fullName;
    const scope = input.scope ?? `ref:${input.ref}`;
    const commit = { repo, sha: input.sha, scope };
    const fresh = `b${randomBytes(8).toString('hex')}`;
    const id = await store.claim(commit, fresh, opts);
    if (id !== fresh) {
      const b = await get(id);
      if (b && b.state !== 'starting') {
        log.info({ repo, sha: input.sha, build: b.id }, 'commit already built for this branch: nothing new');
        return b;
      }
      // Not started yet: a retry of this event (or another event) takes over, unless one is starting it now.
    }
    const lock = store.startLock(commit);
    if (!(await lock.take())) {
      throw new Error(
        `build ${id} of ${repo}@${short(input.sha)} is being started by another event; tried again later`,
      );
    }
    try {
      return await startClaimed(input, id);
    } finally {
      await lock.release();
    }
  }

  async function startClaimed(input: BuildInput, id: string): Promise<BuildRecord | undefined> {
    const repo = input.repo.fullName;

    let b = await get(id);
    if (!b) {
      const found = await readRepoConfig(o.github, {
        installationId: input.installationId,
        fullName: repo,
        sha: input.sha,
      });
      if (!found) {
        log.info({ repo, sha: input.sha }, `no ${CONFIG_FILES.join(' or ')} at the commit: no build`);
        return undefined;
      }
      const number = await store.nextNumber(repo);
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
          job,
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
        event: input.event,
        ...(input.scope ? { scope: input.scope } : {}),
        autoCancel: result.settings?.autoCancel ?? o.autoCancel,
        configPath: found.path,
        stages: result.stages,
        currentStage: 0,
        state: 'starting',
        notes: ignoredNotes(result.ignored, result.warnings),
        createdAt: new Date().toISOString(),
        origin: 'github',
        fastFinish: result.fastFinish,
        slots,
      };
      await store.create(b);
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
    const started = await mutate(b.id, startStages);
    const built = started?.after ?? b;
    log.info(
      { repo, sha: input.sha, build: built.id, number: built.number, jobs: built.slots.length },
      'build started',
    );

    // Auto-cancel: this build supersedes the older one of the same branch or pull request.
    if (built.scope) {
      const previous = await store.setLatest(repo, built.scope, built.id);
      if (previous && previous !== built.id && built.autoCancel) await cancel(previous, 'superseded', built);
    }
    return built;
  }

  async function cancel(buildId: string, reason: 'canceled' | 'superseded', by?: BuildRecord): Promise<void> {
    const changed = await mutate(buildId, (b) => cancelStages(b)?.build);
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
    const changed = await mutate(buildId, (b) => finishJob(b, jobId, state));
    if (!changed) return;
    await advanceBuild(buildId);
  }

  /** Queues the next stage when every job of the current one has finished and passed (allow_failure excepted). */
  async function advanceBuild(buildId: string): Promise<void> {
    let step: Advance<ExpandedJob, BuildEvent> | undefined;
    const changed = await mutate(buildId, (b) => {
      step = advance(b);
      return step?.build;
    });
    if (!changed || !step) return;
    const { queue: next, skipped: blocked, failedStage = '' } = step;
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
    const buildId = (await o.queue.get(jobId))?.labels.build;
    if (!buildId) return undefined;
    let slot: BuildSlot | undefined;
    const changed = await mutate(buildId, (b) => {
      // Only a finished job of a stage that has been reached is run again.
      const r = rerun(b, jobId);
      slot = r?.slot;
      return r?.build;
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
    const last = await store.lastOfCommit(repo, sha);
    if (!last) return undefined;
    return start(
      {
        repo: { id: last.repoId, fullName: last.repo },
        installationId: last.installationId,
        sha: last.sha,
        cloneUrl: last.cloneUrl,
        private: last.private,
        ref: last.ref,
        event: last.event,
        scope: last.scope,
        fork: !last.credential,
      },
      { force: true },
    );
  }

  return {
    start,
    jobFinished,
    cancel,
    rerunJob,
    rerunCommit,
    get,
    renewCredentials: () => tokens.renew(),
    target,
    slotOf: (b, jobId) => b.slots.find((s) => s.jobId === jobId),
    summary,
  };
}
