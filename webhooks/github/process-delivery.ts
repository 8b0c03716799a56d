import { JobFinishedError, JobNotFoundError, type JobQueue, PermanentTaskError } from '../../queue/index.ts';
import type { Logger } from '../../src/core/index.ts';
import type { BuildEvent } from '../repo-config/index.ts';
import type { BuildInput, Builds } from './builds.ts';
import { CheckRunPayload, CheckSuitePayload, PullRequestPayload, PushPayload } from './payloads.ts';
import type { Delivery } from './webhook-routes.ts';

export interface ProcessDeliveryOptions {
  builds: Builds;
  queue: JobQueue;
  logger: Logger;
}

const ZERO_SHA = /^0{40}$/;

function parse<T>(
  schema: {
    safeParse(
      v: unknown,
    ):
      | { success: true; data: T }
      | { success: false; error: { issues: { path: PropertyKey[]; message: string }[] } };
  },
  d: Delivery,
): T {
  let json: unknown;
  try {
    json = JSON.parse(d.payload);
  } catch {
    throw new PermanentTaskError(`delivery ${d.id}: the payload is not JSON`);
  }
  const r = schema.safeParse(json);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new PermanentTaskError(
      `delivery ${d.id} (${d.event}): ${i?.path.map(String).join('.')}: ${i?.message}`,
    );
  }
  return r.data;
}

/**
 * Acts on one verified delivery (in the GitHub worker, never in the request path): a push or a
 * pull request starts a build; check_suite requested builds a commit no push built yet, and
 * rerequested runs its jobs again; check_run rerequested runs one job again, and its `cancel`
 * button cancels the job. A payload of the wrong shape fails for good; a GitHub or Redis error
 * is retried by the queue.
 */
export function createDeliveryProcessor(o: ProcessDeliveryOptions): (d: Delivery) => Promise<void> {
  const log = o.logger.child({ component: 'github-events' });

  async function push(d: Delivery): Promise<void> {
    const p = parse(PushPayload, d);
    if (p.deleted || ZERO_SHA.test(p.after)) return;
    const branch = p.ref.startsWith('refs/heads/') ? p.ref.slice('refs/heads/'.length) : undefined;
    const tag = p.ref.startsWith('refs/tags/') ? p.ref.slice('refs/tags/'.length) : undefined;
    if (!branch && !tag) return;
    const event: BuildEvent = {
      type: 'push',
      ...(branch ? { branch } : {}),
      ...(tag ? { tag } : {}),
      commit: p.after,
      ...(p.head_commit?.message !== undefined ? { commitMessage: p.head_commit.message } : {}),
      repo: p.repository.full_name,
      fork: p.repository.fork,
      ...(p.sender ? { sender: p.sender.login } : {}),
    };
    await o.builds.start({
      repo: { id: p.repository.id, fullName: p.repository.full_name },
      installationId: p.installation.id,
      sha: p.after,
      cloneUrl: p.repository.clone_url,
      private: p.repository.private,
      ref: p.ref,
      event,
      scope: branch ? `push:${branch}` : undefined,
      fork: false,
    });
  }

  async function pullRequest(d: Delivery): Promise<void> {
    const p = parse(PullRequestPayload, d);
    const pr = p.pull_request;
    const head = pr.head.repo;
    const fork = head !== null && head.full_name !== p.repository.full_name;
    const input: BuildInput = {
      repo: { id: p.repository.id, fullName: p.repository.full_name },
      installationId: p.installation.id,
      sha: pr.head.sha,
      // A fork's pull request builds its head from the fork (no token: the installation is not the fork's).
      // A deleted fork's head is still in the base repository, as refs/pull/N/head.
      cloneUrl: fork ? head.clone_url : p.repository.clone_url,
      private: p.repository.private,
      ref: head === null ? `refs/pull/${p.number}/head` : `refs/heads/${pr.head.ref}`,
      event: {
        type: 'pull_request',
        branch: pr.base.ref,
        commit: pr.head.sha,
        commitMessage: pr.title,
        repo: p.repository.full_name,
        fork,
        pullRequest: p.number,
        headBranch: pr.head.ref,
        headRepo: head?.full_name ?? p.repository.full_name,
        headSha: pr.head.sha,
        ...(p.sender ? { sender: p.sender.login } : {}),
      },
      scope: `pr:${p.number}`,
      fork,
    };
    await o.builds.start(input);
  }

  async function checkSuite(d: Delivery): Promise<void> {
    const p = parse(CheckSuitePayload, d);
    const s = p.check_suite;
    if (p.action === 'rerequested') {
      const b = await o.builds.rerunCommit(p.repository.full_name, s.head_sha);
      if (b) return;
    }
    // requested (or a rerequest of a commit archway never built): build the branch's commit unless a push did.
    if (!s.head_branch) return;
    await o.builds.start(
      {
        repo: { id: p.repository.id, fullName: p.repository.full_name },
        installationId: p.installation.id,
        sha: s.head_sha,
        cloneUrl: p.repository.clone_url,
        private: p.repository.private,
        ref: `refs/heads/${s.head_branch}`,
        event: {
          type: 'push',
          branch: s.head_branch,
          commit: s.head_sha,
          ...(s.head_commit?.message !== undefined ? { commitMessage: s.head_commit.message } : {}),
          repo: p.repository.full_name,
          fork: p.repository.fork,
          ...(p.sender ? { sender: p.sender.login } : {}),
        },
        scope: `push:${s.head_branch}`,
        fork: false,
      },
      { force: p.action === 'rerequested' },
    );
  }

  async function checkRun(d: Delivery): Promise<void> {
    const p = parse(CheckRunPayload, d);
    const jobId = p.check_run.external_id ?? '';
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(jobId)) {
      log.info({ delivery: d.id, check: p.check_run.id }, 'check run without an archway job: nothing to do');
      return;
    }
    // Only a job of this repository: a check run's external_id is archway's, but a job is checked against the delivery.
    const job = await o.queue.get(jobId);
    if (!job || job.labels.repo !== p.repository.full_name) {
      log.info({ delivery: d.id, job: jobId }, 'no job of this repository: nothing to do');
      return;
    }
    if (p.action === 'rerequested') {
      const id = await o.builds.rerunJob(jobId);
      if (!id)
        log.info(
          { delivery: d.id, job: jobId },
          'job cannot be re-run (unknown, not finished, or its stage not reached)',
        );
      return;
    }
    if (p.action === 'requested_action' && p.requested_action?.identifier === 'cancel') {
      await o.queue.cancel(jobId).catch((e: unknown) => {
        if (e instanceof JobFinishedError || e instanceof JobNotFoundError) return;
        throw e;
      });
    }
  }

  return async (d) => {
    switch (d.event) {
      case 'push':
        return push(d);
      case 'pull_request':
        return pullRequest(d);
      case 'check_suite':
        return checkSuite(d);
      case 'check_run':
        return checkRun(d);
      default:
        log.debug({ delivery: d.id, event: d.event }, 'event not acted on');
    }
  };
}
