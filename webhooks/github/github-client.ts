import { readFile } from 'node:fs/promises';
import { App, Octokit } from 'octokit';
import { type Logger, toError } from '../../src/core/index.ts';
import { GitHubKeyError } from './github-key-error.ts';

/** An installation's client: the REST calls archway makes as the App on one installation. */
export type InstallationClient = Octokit;

export interface GitHubClientOptions {
  appId: number;
  /** The App's private key, PEM text. */
  privateKey: string;
  /** GitHub's REST API, e.g. https://api.github.com (tests: a local fake). */
  apiUrl: string;
  logger: Logger;
  /** Per request, in ms. Default 10000. */
  timeoutMs?: number;
}

/** A short-lived installation token limited to reading one repository's contents. */
export interface SourceToken {
  token: string;
  /** Epoch ms. */
  expiresAt: number;
}

export interface GitHubClient {
  /** The git host of the configured GitHub (`github.com` for api.github.com; the API's host otherwise). */
  readonly gitHost: string;
  installation(installationId: number): Promise<InstallationClient>;
  /** A token for fetching one repository (contents: read), for a worker. Cached until 10 minutes before it expires. */
  sourceToken(installationId: number, repositoryId: number): Promise<SourceToken>;
}

/**
 * Reads ARCHWAY_GITHUB_PRIVATE_KEY: PEM text as is (with `\n` escapes, as env files often hold
 * it), else the path of a PEM file.
 */
export async function loadPrivateKey(value: string): Promise<string> {
  const text = value.includes('-----BEGIN')
    ? value.replace(/\\n/g, '\n')
    : await readFile(value, 'utf8').catch((e: unknown) => {
        throw new GitHubKeyError(`neither PEM text nor a readable file (${toError(e).message})`);
      });
  if (!/-----BEGIN (RSA )?PRIVATE KEY-----/.test(text)) {
    throw new GitHubKeyError('not a PEM private key');
  }
  return text;
}

/** The git host that goes with a GitHub API URL. */
export function gitHostOf(apiUrl: string): string {
  const u = new URL(apiUrl);
  return u.host === 'api.github.com' ? 'github.com' : u.host.toLowerCase();
}

/**
 * The GitHub App's client (octokit's App auth against `apiUrl`). octokit's own retries and
 * throttling are off: every call runs in a BullMQ job, whose retries and backoff are the one
 * place a failed call is tried again.
 */
export function createGitHubClient(o: GitHubClientOptions): GitHubClient {
  const log = o.logger.child({ component: 'github' });
  const Client = Octokit.defaults({
    baseUrl: o.apiUrl.replace(/\/+$/, ''),
    retry: { enabled: false },
    throttle: { enabled: false },
    request: { timeout: o.timeoutMs ?? 10_000 },
    log: {
      debug: () => undefined,
      info: () => undefined,
      warn: (m: string) => log.debug(m),
      error: (m: string) => log.debug(m),
    },
  });
  const app = new App({ appId: o.appId, privateKey: o.privateKey, Octokit: Client });
  const clients = new Map<number, Promise<InstallationClient>>();
  const tokens = new Map<string, SourceToken>();
  return {
    gitHost: gitHostOf(o.apiUrl),
    installation(id) {
      let c = clients.get(id);
      if (!c) {
        c = app.getInstallationOctokit(id) as Promise<InstallationClient>;
        c.catch(() => clients.delete(id));
        clients.set(id, c);
      }
      return c;
    },
    async sourceToken(installationId, repositoryId) {
      const key = `${installationId}:${repositoryId}`;
      const cached = tokens.get(key);
      if (cached && cached.expiresAt - Date.now() > 10 * 60_000) return cached;
      const r = await app.octokit.request('POST /app/installations/{installation_id}/access_tokens', {
        installation_id: installationId,
        repository_ids: [repositoryId],
        permissions: { contents: 'read' },
      });
      const t = { token: r.data.token, expiresAt: Date.parse(r.data.expires_at) || Date.now() + 3_600_000 };
      tokens.set(key, t);
      return t;
    },
  };
}
