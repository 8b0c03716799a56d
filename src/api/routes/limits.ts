import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { type GroupStatus, REPO_DEFAULT_GROUP, REPO_LABEL } from '../../../queue/index.ts';
import { InvalidInputError } from '../../core/index.ts';
import type { ApiDeps } from '../api-deps.ts';
import { errorResponses } from '../schemas.ts';

const security = [{ bearer: [] }];

/** Most jobs one group may run at once (a cap above any fleet is no cap). */
export const MAX_CONCURRENCY = 10_000;

const GroupView = z.object({
  /** `repo=owner/name` or `key=value`: the label its jobs carry. */
  group: z.string(),
  /** The cap that applies now: the group's own, else (a repository) the default; null when uncapped. */
  concurrency: z.int().nullable(),
  /** Whether the cap is the group's own (false: the default, or none). */
  own: z.boolean(),
  /** Jobs of the group running now (slots held). */
  running: z.int(),
  /** Jobs of the group held in the queue by the cap. */
  waiting: z.int(),
});
type GroupView = z.infer<typeof GroupView>;

const LimitBody = z.strictObject({
  /** Jobs of the group that run at once; null removes the group's own cap (a repository then has the default). */
  concurrency: z.int().min(1).max(MAX_CONCURRENCY).nullable(),
});

const Segment = z.string().regex(/^[A-Za-z0-9_.-]{1,100}$/, 'a GitHub owner or repository name');
const LabelKey = z.string().regex(/^[A-Za-z0-9_./-]{1,63}$/, 'a label key');

/** Concurrency caps per repository and per label (under /v1): see docs/configuration.md, "Concurrency caps". */
export const limitRoutes: FastifyPluginAsyncZod<{ deps: ApiDeps }> = async (app, { deps }) => {
  const limits = deps.queue.limits;

  async function view(s: GroupStatus): Promise<GroupView> {
    const fallback = s.group.startsWith(`${REPO_LABEL}=`) ? await limits.getDefault() : undefined;
    const concurrency = s.concurrency ?? fallback;
    return {
      group: s.group,
      concurrency: concurrency ?? null,
      own: s.concurrency !== undefined,
      running: s.running,
      waiting: s.waiting,
    };
  }

  async function put(
    group: string,
    concurrency: number | null,
    by: string,
    log: { info: (o: object, m: string) => void },
  ) {
    await limits.set(group, concurrency);
    log.info({ group, concurrency, by }, 'concurrency cap changed');
    // A raised (or removed) cap lets held jobs run now, not at their next look.
    await deps.queue.promote(await limits.wake([group]));
    return view(await limits.status(group));
  }

  app.get(
    '/limits',
    {
      schema: {
        summary: 'List concurrency caps',
        description:
          "The repositories' default cap (ARCHWAY_REPO_CONCURRENCY on the API) and every group with a cap of its own, jobs running under a cap or jobs held, with its running and held jobs.",
        tags: ['limits'],
        security,
        response: {
          200: z.object({ repoDefault: z.int().nullable(), groups: z.array(GroupView) }),
          ...errorResponses(401, 403),
        },
      },
    },
    async () => {
      const [repoDefault, groups] = await Promise.all([limits.getDefault(), limits.list()]);
      return { repoDefault: repoDefault ?? null, groups: await Promise.all(groups.map(view)) };
    },
  );

  const repoParams = z.object({ owner: Segment, name: Segment });
  app.get(
    '/repos/:owner/:name/limits',
    {
      schema: {
        summary: "Get a repository's concurrency cap",
        description:
          'The cap of the jobs labelled `repo=owner/name` (builds of the repository), and their load.',
        tags: ['limits'],
        security,
        params: repoParams,
        response: { 200: GroupView, ...errorResponses(400, 401, 403) },
      },
    },
    async (req) => view(await limits.status(`${REPO_LABEL}=${req.params.owner}/${req.params.name}`)),
  );
  app.put(
    '/repos/:owner/:name/limits',
    {
      config: { scope: 'admin' },
      schema: {
        summary: "Set a repository's concurrency cap",
        description: `At most \`concurrency\` jobs of the repository run at once (1 to ${MAX_CONCURRENCY}); more wait in the queue without holding a slot. \`null\` returns the repository to the default. Takes effect at once, on every worker.`,
        tags: ['limits'],
        security,
        params: repoParams,
        body: LimitBody,
        response: { 200: GroupView, ...errorResponses(400, 401, 403, 415) },
      },
    },
    async (req) =>
      put(
        `${REPO_LABEL}=${req.params.owner}/${req.params.name}`,
        req.body.concurrency,
        req.clientId,
        req.log,
      ),
  );

  const labelParams = z.object({ key: LabelKey, value: z.string().min(1).max(255) });
  app.get(
    '/labels/:key/:value/limits',
    {
      schema: {
        summary: "Get a label's concurrency cap",
        description: 'The cap of the jobs labelled `key=value`, and their load.',
        tags: ['limits'],
        security,
        params: labelParams,
        response: { 200: GroupView, ...errorResponses(400, 401, 403) },
      },
    },
    async (req) => view(await limits.status(`${req.params.key}=${req.params.value}`)),
  );
  app.put(
    '/labels/:key/:value/limits',
    {
      config: { scope: 'admin' },
      schema: {
        summary: "Set a label's concurrency cap",
        description: `At most \`concurrency\` jobs labelled \`key=value\` run at once (1 to ${MAX_CONCURRENCY}); \`null\` removes the cap. A job under several caps runs when every one has room.`,
        tags: ['limits'],
        security,
        params: labelParams,
        body: LimitBody,
        response: { 200: GroupView, ...errorResponses(400, 401, 403, 415) },
      },
    },
    async (req) => {
      if (
        req.params.key === REPO_LABEL &&
        req.params.value === REPO_DEFAULT_GROUP.slice(REPO_LABEL.length + 1)
      )
        throw new InvalidInputError(
          'value',
          'repo=* is the default cap: set ARCHWAY_REPO_CONCURRENCY on the API',
        );
      return put(`${req.params.key}=${req.params.value}`, req.body.concurrency, req.clientId, req.log);
    },
  );
};
