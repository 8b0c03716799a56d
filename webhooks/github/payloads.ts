import { z } from 'zod';

/**
 * The fields archway reads from GitHub's webhook payloads. The body is signed, but it is still
 * read through zod (a trust boundary): a payload of another shape is refused, never half-used.
 * Unknown fields pass (GitHub adds fields over time).
 */

const Repository = z.object({
  id: z.number(),
  full_name: z.string().regex(/^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/),
  clone_url: z.string(),
  fork: z.boolean().default(false),
  private: z.boolean().default(false),
});
export type Repository = z.infer<typeof Repository>;

const Installation = z.object({ id: z.number() });
const Sender = z.object({ login: z.string() }).optional();

export const PushPayload = z.object({
  ref: z.string(),
  after: z.string(),
  deleted: z.boolean().default(false),
  head_commit: z.object({ id: z.string(), message: z.string() }).nullable().optional(),
  repository: Repository,
  installation: Installation,
  sender: Sender,
});
export type PushPayload = z.infer<typeof PushPayload>;

const PullRequestEnd = z.object({
  ref: z.string(),
  sha: z.string(),
  repo: Repository.nullable(),
});

export const PullRequestPayload = z.object({
  action: z.string(),
  number: z.number(),
  pull_request: z.object({
    title: z.string().default(''),
    head: PullRequestEnd,
    base: PullRequestEnd,
  }),
  repository: Repository,
  installation: Installation,
  sender: Sender,
});
export type PullRequestPayload = z.infer<typeof PullRequestPayload>;

export const CheckSuitePayload = z.object({
  action: z.string(),
  check_suite: z.object({
    head_sha: z.string(),
    head_branch: z.string().nullable(),
    head_commit: z.object({ message: z.string() }).nullable().optional(),
  }),
  repository: Repository,
  installation: Installation,
  sender: Sender,
});
export type CheckSuitePayload = z.infer<typeof CheckSuitePayload>;

export const CheckRunPayload = z.object({
  action: z.string(),
  check_run: z.object({
    id: z.number(),
    external_id: z.string().nullable().default(''),
    head_sha: z.string(),
    name: z.string(),
  }),
  requested_action: z.object({ identifier: z.string() }).nullable().optional(),
  repository: Repository,
  installation: Installation,
  sender: Sender,
});
export type CheckRunPayload = z.infer<typeof CheckRunPayload>;

/** The events and actions archway acts on; everything else is answered 204 and dropped. */
export const HANDLED_EVENTS: Readonly<Record<string, readonly string[] | 'any'>> = {
  push: 'any',
  pull_request: ['opened', 'synchronize', 'reopened'],
  check_suite: ['requested', 'rerequested'],
  check_run: ['rerequested', 'requested_action'],
};

/** True when archway acts on this event and action. */
export function isHandled(event: string, action: string | undefined): boolean {
  const actions = HANDLED_EVENTS[event];
  if (actions === undefined) return false;
  return actions === 'any' || (action !== undefined && actions.includes(action));
}
