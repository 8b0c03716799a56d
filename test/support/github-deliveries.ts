import { randomUUID } from 'node:crypto';
import { Webhooks } from '@octokit/webhooks';
import examples from '@octokit/webhooks-examples';
import type { FakeRepo } from './fake-github.ts';

export type Example = Record<string, unknown> & { action?: string };
const all = examples as unknown as { name: string; examples: Example[] }[];

/** A real payload of GitHub's, from @octokit/webhooks-examples. */
export function example(name: string, pick: (e: Example) => boolean = () => true): Example {
  const found = all.find((e) => e.name === name)?.examples.find(pick);
  if (!found) throw new Error(`no example ${name}`);
  return structuredClone(found);
}

/** Signed deliveries of real GitHub payloads to an API's webhook route. */
export function createDeliverer(o: { apiUrl: () => string; secret: string; installation: number }) {
  const repository = (repo: FakeRepo, base: Record<string, unknown> = {}) => ({
    ...base,
    id: repo.id,
    full_name: repo.fullName,
    name: repo.fullName.split('/')[1],
    clone_url: repo.cloneUrl,
    fork: false,
    private: true,
  });
  return {
    repository,
    pushPayload(repo: FakeRepo, sha: string, branch = 'main', message = 'a commit'): Example {
      const p = example('push', (e) => String(e.ref).startsWith('refs/heads/'));
      return {
        ...p,
        ref: `refs/heads/${branch}`,
        after: sha,
        deleted: false,
        head_commit: { ...(p.head_commit as object), id: sha, message },
        repository: repository(repo, p.repository as Record<string, unknown>),
        installation: { id: o.installation },
      };
    },
    /** Posts `payload` signed with the secret (or `secret`; `signature: null` sends none, a string sends that). */
    async deliver(
      event: string,
      payload: unknown,
      d: { id?: string; secret?: string; signature?: string | null } = {},
    ): Promise<{ status: number; id: string; body: string }> {
      const id = d.id ?? randomUUID();
      const body = JSON.stringify(payload);
      const signature =
        d.signature === null
          ? undefined
          : (d.signature ?? (await new Webhooks({ secret: d.secret ?? o.secret }).sign(body)));
      const res = await fetch(`${o.apiUrl()}/webhooks/github`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'x-github-event': event,
          'x-github-delivery': id,
          ...(signature ? { 'x-hub-signature-256': signature } : {}),
        },
        body,
      });
      return { status: res.status, id, body: await res.text() };
    },
  };
}
