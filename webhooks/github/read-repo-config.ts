import type { GitHubClient } from './github-client.ts';

/** The config files read at the commit, in order: the first that exists is used. */
export const CONFIG_FILES = ['.archway.yml', '.travis.yml'] as const;

/**
 * The first of CONFIG_FILES at a commit, read through the contents API with the installation's
 * token; `undefined` when the commit has none. A GitHub error other than 404 is thrown (retried).
 */
export async function readRepoConfig(
  github: GitHubClient,
  at: { installationId: number; fullName: string; sha: string },
): Promise<{ path: string; text: string } | undefined> {
  const [owner, repo] = at.fullName.split('/') as [string, string];
  const client = await github.installation(at.installationId);
  for (const path of CONFIG_FILES) {
    try {
      const r = await client.request('GET /repos/{owner}/{repo}/contents/{path}', {
        owner,
        repo,
        path,
        ref: at.sha,
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
