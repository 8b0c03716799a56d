import type { Redis } from 'ioredis';
import { z } from 'zod';
import { createLease, createTaskQueue, PermanentTaskError } from '../../queue/index.ts';
import { type Keys, type Logger, toError } from '../../src/core/index.ts';
import type { GitHubClient } from './github-client.ts';

/** GitHub's limit on a check run's `output.summary` and `output.text`, in characters. */
export const OUTPUT_LIMIT = 65_535;

export const CHECK_CONCLUSIONS = [
  'success',
  'failure',
  'neutral',
  'cancelled',
  'skipped',
  'timed_out',
  'action_required',
] as const;
export type CheckConclusion = (typeof CHECK_CONCLUSIONS)[number];

/** Which check run: archway's key for it, and where it lives on GitHub. */
export interface CheckRunTarget {
  /** archway's key: `<build>-<n>-<generation>`, `<build>-skipped-<n>`, `config-<build>`. */
  key: string;
  /** `owner/name`. */
  repo: string;
  installationId: number;
  headSha: string;
  name: string;
}

/** One state of a check run, as it is sent (the first one creates it). */
export const CheckRunUpdate = z.object({
  status: z.enum(['queued', 'in_progress', 'completed']),
  conclusion: z.enum(CHECK_CONCLUSIONS).optional(),
  title: z.string(),
  summary: z.string(),
  text: z.string().optional(),
  startedAt: z.string().optional(),
  completedAt: z.string().optional(),
  externalId: z.string().optional(),
  detailsUrl: z.string().optional(),
  /** Buttons on the check run (`cancel` while it is queued or running); `[]` removes them. */
  actions: z
    .array(z.object({ label: z.string(), identifier: z.string(), description: z.string() }))
    .optional(),
});
export type CheckRunUpdate = z.infer<typeof CheckRunUpdate>;

export interface CheckRunsOptions {
  redis: Redis;
  /** Makes the connection the sync worker blocks on. */
  duplicate: () => Redis;
  keys: Keys;
  github: GitHubClient;
  logger: Logger;
  /** Check runs synced at once. Default 8. */
  concurrency?: number;
  /** First retry delay after a failed GitHub call, in ms; doubles up to `retryMaxMs`. Default 1000. */
  retryBaseMs?: number;
  /** Longest retry delay, in ms. Default 60000. */
  retryMaxMs?: number;
}

export interface CheckRuns {
  /**
   * Records the next state of a check run and queues its delivery. States of one check run reach
   * GitHub in the order they were recorded, each once (a per-check-run sequence); a failed call
   * is retried with backoff, so an outage of GitHub delays updates and loses none.
   */
  update(target: CheckRunTarget, u: CheckRunUpdate): Promise<void>;
  start(): Promise<void>;
  /** Idempotent: stops the sync worker (a sync in flight finishes), then the queue. */
  close(): Promise<void>;
}

// KEYS: check hash, updates list. ARGV: update JSON, then identity field/value pairs.
const APPEND_LUA = `
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('RPUSH', KEYS[2], seq .. '|' .. ARGV[1])
return seq
`;

/** Attempts of one sync: with the delay capped at a minute, several hours of GitHub outage. */
const SYNC_ATTEMPTS = 500;
const LOCK_MS = 60_000;

const SyncData = z.object({ key: z.string().min(1) });

function cut(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max - 40)}\n\n[... cut to GitHub's limit ...]`;
}

/** The REST body of one update. */
function body(u: CheckRunUpdate): Record<string, unknown> {
  return {
    status: u.status,
    ...(u.conclusion ? { conclusion: u.conclusion } : {}),
    ...(u.startedAt ? { started_at: u.startedAt } : {}),
    ...(u.completedAt ? { completed_at: u.completedAt } : {}),
    ...(u.externalId !== undefined ? { external_id: u.externalId } : {}),
    ...(u.detailsUrl ? { details_url: u.detailsUrl } : {}),
    ...(u.actions ? { actions: u.actions } : {}),
    output: {
      title: cut(u.title, 255),
      summary: cut(u.summary, OUTPUT_LIMIT),
      ...(u.text !== undefined ? { text: cut(u.text, OUTPUT_LIMIT) } : {}),
    },
  };
}

/** True for a GitHub answer that a retry cannot change (the update is then dropped, and said so). */
function permanent(e: unknown): boolean {
  const status = (e as { status?: unknown }).status;
  return typeof status === 'number' && [400, 404, 410, 422].includes(status);
}

export function createCheckRuns(o: CheckRunsOptions): CheckRuns {
  const log = o.logger.child({ component: 'check-runs' });
  const r = o.redis as Redis & {
    awCheckAppend(k1: string, k2: string, ...args: string[]): Promise<number>;
  };
  o.redis.defineCommand('awCheckAppend', { numberOfKeys: 2, lua: APPEND_LUA });
  const queue = createTaskQueue({
    redis: o.redis,
    duplicate: o.duplicate,
    keys: o.keys,
    name: o.keys.githubChecksQueue,
    schema: SyncData,
    attempts: SYNC_ATTEMPTS,
    keepCompletedSeconds: 0,
    keepFailedSeconds: 7 * 86_400,
    concurrency: o.concurrency ?? 8,
    ...(o.retryBaseMs !== undefined ? { retryBaseMs: o.retryBaseMs } : {}),
    ...(o.retryMaxMs !== undefined ? { retryMaxMs: o.retryMaxMs } : {}),
    onFailed: (f) =>
      log.warn(
        { check: (f.data as { key?: string } | undefined)?.key, attempt: f.attempt, err: f.err.message },
        'check run update failed; retried with backoff',
      ),
    onError: (e) => log.debug({ err: e.message }, 'check run queue error'),
  });

  /** Sends every recorded state of one check run not yet sent, in order. False when another sync holds it. */
  async function sync(key: string): Promise<boolean> {
    const lock = createLease(o.redis, o.keys.checkRunLock(key), LOCK_MS);
    if (!(await lock.take())) return false;
    try {
      const h = await o.redis.hgetall(o.keys.checkRun(key));
      const [owner, repo] = (h.repo ?? '').split('/');
      if (!owner || !repo || !h.installationId || !h.headSha || !h.name) {
        throw new PermanentTaskError(`check run ${key}: no record`);
      }
      let applied = Number(h.applied ?? 0);
      let githubId = h.githubId ? Number(h.githubId) : undefined;
      const items = await o.redis.lrange(o.keys.checkRunUpdates(key), 0, -1);
      let done = 0;
      const client = await o.github.installation(Number(h.installationId));
      for (const item of items) {
        const bar = item.indexOf('|');
        const seq = Number(item.slice(0, bar));
        if (seq <= applied) {
          done++;
          continue;
        }
        const u = CheckRunUpdate.parse(JSON.parse(item.slice(bar + 1)));
        try {
          if (githubId === undefined) {
            const res = await client.request('POST /repos/{owner}/{repo}/check-runs', {
              owner,
              repo,
              name: h.name,
              head_sha: h.headSha,
              ...(body(u) as object),
            } as never);
            githubId = (res.data as { id: number }).id;
            await o.redis.hset(o.keys.checkRun(key), 'githubId', String(githubId), 'applied', String(seq));
          } else {
            await client.request('PATCH /repos/{owner}/{repo}/check-runs/{check_run_id}', {
              owner,
              repo,
              check_run_id: githubId,
              ...(body(u) as object),
            } as never);
            await o.redis.hset(o.keys.checkRun(key), 'applied', String(seq));
          }
        } catch (e) {
          if (!permanent(e)) throw e;
          log.error(
            { check: key, seq, status: (e as { status?: number }).status, err: toError(e).message },
            'GitHub refused a check run update; it is dropped',
          );
          await o.redis.hset(o.keys.checkRun(key), 'applied', String(seq));
        }
        applied = seq;
        done++;
      }
      // Only the head of the list, which is sent: later updates were appended behind it.
      if (done > 0) await o.redis.ltrim(o.keys.checkRunUpdates(key), done, -1);
      return true;
    } finally {
      await lock.release();
    }
  }

  return {
    async update(target, u) {
      const seq = await r.awCheckAppend(
        o.keys.checkRun(target.key),
        o.keys.checkRunUpdates(target.key),
        JSON.stringify(CheckRunUpdate.parse(u)),
        'repo',
        target.repo,
        'installationId',
        String(target.installationId),
        'headSha',
        target.headSha,
        'name',
        target.name,
      );
      await queue.add(`${target.key}.${seq}`, { key: target.key });
    },
    async start() {
      await queue.start(async ({ key }) => {
        // Another sync of this check run is sending: come back after it.
        if (!(await sync(key))) return { deferMs: 200 };
        return undefined;
      });
    },
    /** The sync worker (a sync in flight finishes), its connection, then the queue. */
    close: () => queue.close(),
  };
}
