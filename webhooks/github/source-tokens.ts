import type { Redis } from 'ioredis';
import { createSourceCredentials, type JobStore } from '../../queue/index.ts';
import {
  FINAL_STATES,
  type Keys,
  type Logger,
  parseSourceUrl,
  type SourceUrlPolicy,
  toError,
} from '../../src/core/index.ts';
import type { GitHubClient } from './github-client.ts';

export interface SourceTokensOptions {
  redis: Redis;
  keys: Keys;
  jobs: JobStore;
  github: GitHubClient;
  sourcePolicy: SourceUrlPolicy;
  logger: Logger;
}

/** What a build's source token is made for. */
export interface TokenSource {
  installationId: number;
  repoId: number;
  cloneUrl: string;
}

/**
 * The source tokens of webhook jobs: an installation token restricted to the repository, stored
 * for each job where its worker reads it (queue's source credentials), renewed while the job
 * waits (for its stage, up to a day), dropped when it ends.
 */
export interface SourceTokens {
  /** Stores a fresh token for each of `jobIds`. */
  issue(source: TokenSource, jobIds: readonly string[]): Promise<void>;
  drop(jobIds: readonly string[]): Promise<void>;
  /** Renews the tokens of jobs that may still need them, and drops the others. */
  renew(): Promise<void>;
}

/** A token is kept for a job that waits at most this long; then it is dropped. */
const KEEP_MS = 86_400_000;
/** Tokens that expire within this are renewed. */
const RENEW_AHEAD_MS = 20 * 60_000;

/** Token lifetime left after a margin, never under a minute. */
const ttlOf = (expiresAt: number) => Math.max(60_000, expiresAt - Date.now() - 60_000);

export function createSourceTokens(o: SourceTokensOptions): SourceTokens {
  const log = o.logger.child({ component: 'source-tokens' });
  const store = createSourceCredentials(o.redis, o.keys);
  return {
    async issue(source, jobIds) {
      if (jobIds.length === 0) return;
      const t = await o.github.sourceToken(source.installationId, source.repoId);
      const host = parseSourceUrl(source.cloneUrl, o.sourcePolicy, 'repository.clone_url').host;
      await store.put(
        jobIds,
        {
          host,
          token: t.token,
          installationId: source.installationId,
          repositoryId: source.repoId,
          since: Date.now(),
        },
        ttlOf(t.expiresAt),
      );
    },
    drop: (jobIds) => store.drop(jobIds),
    async renew() {
      const ids = await store.expiringBefore(Date.now() + RENEW_AHEAD_MS, 500);
      for (const id of ids) {
        const c = await store.get(id);
        const state = await o.jobs.field(id, 'state');
        if (
          !c ||
          (state && (FINAL_STATES as readonly string[]).includes(state)) ||
          Date.now() - c.since > KEEP_MS
        ) {
          await store.drop([id]);
          continue;
        }
        try {
          const t = await o.github.sourceToken(c.installationId, c.repositoryId);
          await store.put([id], { ...c, token: t.token }, ttlOf(t.expiresAt));
        } catch (e) {
          log.warn({ job: id, err: toError(e).message }, 'could not renew a source token; tried again later');
        }
      }
    },
  };
}
