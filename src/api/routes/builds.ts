import type { Readable } from 'node:stream';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { type JobQueue, jobIdOf } from '../../../queue/index.ts';
import { Arch, JobId } from '../../core/index.ts';
import { type ApiBuild, type ApiBuilds, BuildRequest } from '../builds/api-builds.ts';
import { BuildNotFoundError } from '../builds/build-not-found-error.ts';
import { serveUploadGit, type Uploads } from '../builds/uploads.ts';
import type { PageLinks } from '../pages/index.ts';
import { apiSchemas, errorResponses, Flag } from '../schemas.ts';

const security = [{ bearer: [] }];

const BuildId = z.string().regex(/^b[0-9a-f]{16}$/, 'a build id (b + 16 hex digits)');

/** One job of a build, as the API shows it. */
export const BuildJobView = z.object({
  /** The current job of this place in the matrix (a restart makes a new one). */
  id: z.string(),
  /** Its place in the build (1-based), and the job number Travis shows (`7.2`). */
  n: z.int(),
  number: z.string(),
  name: z.string(),
  arch: Arch,
  image: z.string(),
  stage: z.string(),
  allowFailure: z.boolean(),
  /** A job state, or `waiting` (its stage not reached) or `skipped` (an earlier stage failed). */
  state: z.string(),
  startedAt: z.string().optional(),
  finishedAt: z.string().optional(),
  durationMs: z.int().optional(),
  /** Earlier runs of this place (restarts), oldest first. */
  previous: z.array(z.string()),
});

export const BuildView = z
  .object({
    id: z.string(),
    number: z.int(),
    repo: z.string(),
    state: z.enum(['starting', 'running', 'passed', 'failed', 'canceled']),
    event: z.object({ type: z.string(), branch: z.string().optional(), tag: z.string().optional() }),
    source: z.object({ git: z.string(), ref: z.string().optional(), sha: z.string().optional() }),
    upload: z.string().optional(),
    config: z.string(),
    stages: z.array(z.string()),
    currentStage: z.int(),
    fastFinish: z.boolean(),
    createdAt: z.string(),
    finishedAt: z.string().optional(),
    jobs: z.array(BuildJobView),
    url: z.string(),
    /** A signed link to the build's page, for people: `GET /v1/builds/:id` sets it. */
    pageUrl: z.string().optional(),
  })
  .register(apiSchemas, { id: 'Build' });
export type BuildView = z.infer<typeof BuildView>;

const CreatedBuild = z
  .object({ build: BuildView, warnings: z.array(z.string()) })
  .register(apiSchemas, { id: 'CreatedBuild' });

const BuildList = z
  .object({ builds: z.array(BuildView), next: z.string().optional() })
  .register(apiSchemas, { id: 'BuildList' });

const UploadView = z
  .object({ id: z.string(), sha: z.string(), sizeBytes: z.int() })
  .register(apiSchemas, { id: 'Upload' });

const BuildListQuery = z.object({
  repo: z.string().max(200).optional(),
  branch: z.string().max(255).optional(),
  state: z.enum(['starting', 'running', 'passed', 'failed', 'canceled']).optional(),
  limit: z.coerce.number().int().min(1).max(100).default(20),
  cursor: z
    .string()
    .regex(/^\d{1,16}$/, 'the `next` value of the previous page')
    .optional(),
});

const idempotencyHeader = z
  .object({
    'idempotency-key': z
      .string()
      .regex(/^[\x21-\x7e]{1,255}$/, '1-255 printable ASCII characters')
      .optional(),
  })
  .loose();

/** The build as the API serves it: its jobs with their state and durations (from their job records). */
async function viewOf(b: ApiBuild, queue: JobQueue, baseUrl: string): Promise<BuildView> {
  const jobs = await Promise.all(
    b.slots.map(async (s) => {
      const job = s.state === 'waiting' || s.state === 'skipped' ? undefined : await queue.get(s.jobId);
      const started = job?.startedAt ? Date.parse(job.startedAt) : undefined;
      const finished = job?.finishedAt ? Date.parse(job.finishedAt) : undefined;
      return {
        id: s.jobId,
        n: s.n,
        number: s.job.number,
        name: s.name,
        arch: s.job.arch,
        image: s.job.image,
        stage: s.job.stage,
        allowFailure: s.allowFailure,
        // The job record is the truth for a job that ran; the slot for one that has not.
        // A job never started of a canceled build is canceled too.
        state: job?.state ?? (b.state === 'canceled' && s.state === 'waiting' ? 'canceled' : s.state),
        ...(job?.startedAt ? { startedAt: job.startedAt } : {}),
        ...(job?.finishedAt ? { finishedAt: job.finishedAt } : {}),
        ...(started !== undefined && finished !== undefined ? { durationMs: finished - started } : {}),
        previous: Array.from({ length: s.gen }, (_, g) => jobIdOf(b.id, s.n, g)),
      };
    }),
  );
  return {
    id: b.id,
    number: b.number,
    repo: b.repo,
    state: b.state,
    event: {
      type: b.event.type,
      ...(b.event.branch ? { branch: b.event.branch } : {}),
      ...(b.event.tag ? { tag: b.event.tag } : {}),
    },
    source: { git: b.cloneUrl, ...(b.ref ? { ref: b.ref } : {}), ...(b.sha ? { sha: b.sha } : {}) },
    ...(b.upload ? { upload: b.upload } : {}),
    config: b.configPath,
    stages: b.stages,
    currentStage: b.currentStage,
    fastFinish: b.fastFinish,
    createdAt: b.createdAt,
    ...(b.finishedAt ? { finishedAt: b.finishedAt } : {}),
    jobs,
    url: `${baseUrl}/v1/builds/${b.id}`,
  };
}

/**
 * Builds (under /v1): submit from a git source or an uploaded tree, read, list, cancel, restart;
 * restart of one job; uploads; and the uploads' git endpoint (outside /v1, for workers).
 */
export const buildRoutes: FastifyPluginAsyncZod<{
  builds: ApiBuilds;
  uploads: Uploads;
  queue: JobQueue;
  publicUrl: () => string;
  /** Signs `pageUrl`, the build's page. */
  links: PageLinks;
}> = async (app, { builds, uploads, queue, publicUrl, links }) => {
  const base = () => publicUrl().replace(/\/+$/, '');
  // The bundle is streamed to disk by the route under its own limit (413 UPLOAD_TOO_LARGE), not buffered.
  app.addContentTypeParser('application/x-git-bundle', (_req, payload, done) => done(null, payload));

  app.post(
    '/uploads',
    {
      config: { scope: 'submit' },
      schema: {
        summary: 'Upload a tree',
        description:
          'The body is a git bundle (Content-Type: application/x-git-bundle) of one commit at refs/heads/main, as `archway build` sends it. Every object is checked (no `..`, `.git` or absolute paths; git has no device files); the tree is kept until the build that uses it ends (plus ARCHWAY_UPLOAD_RETENTION_HOURS, for restarts), or removed after an hour when no build uses it. Over ARCHWAY_UPLOAD_LIMIT_BYTES: 413 UPLOAD_TOO_LARGE.',
        tags: ['builds'],
        security,
        response: { 201: UploadView, ...errorResponses(400, 401, 403, 413, 415) },
      },
    },
    async (req, reply) => {
      const length = req.headers['content-length'] ? Number(req.headers['content-length']) : undefined;
      const up = await uploads.ingest(req.body as Readable, length);
      return reply.code(201).send(up);
    },
  );

  app.post(
    '/builds',
    {
      config: { scope: 'submit' },
      schema: {
        summary: 'Submit a build',
        description:
          "Expands the config (`config`, else the source's .archway.yml or .travis.yml: the upload's, or the git source's at its sha, ref or HEAD, read on the API host under the source policy and ARCHWAY_CONFIG_FETCH_LIMIT_BYTES; the build is pinned to that commit) for the event into jobs in stages and queues the first stage; later stages follow as earlier ones pass. A config error is a 400 whose message is what `archway config expand` prints (file, line, column, the line and a caret); nothing is queued. With an Idempotency-Key, a retried request returns the first build (200).",
        tags: ['builds'],
        security,
        headers: idempotencyHeader,
        body: BuildRequest,
        response: {
          200: CreatedBuild,
          201: CreatedBuild,
          ...errorResponses(400, 401, 403, 409, 413, 415, 503),
        },
      },
    },
    async (req, reply) => {
      const r = await builds.create(req.body, {
        clientId: req.clientId,
        idempotencyKey: req.headers['idempotency-key'],
      });
      return reply
        .code(r.created ? 201 : 200)
        .header('location', `/v1/builds/${r.build.id}`)
        .send({ build: await viewOf(r.build, queue, base()), warnings: r.warnings });
    },
  );

  app.get(
    '/builds/:id',
    {
      schema: {
        summary: 'Get a build',
        description:
          "The build and its jobs: state, arch, stage, allow_failure, durations. `pageUrl` is a signed link to the build's page, valid for ARCHWAY_PAGE_LINK_DAYS.",
        tags: ['builds'],
        security,
        params: z.object({ id: BuildId }),
        response: { 200: BuildView, ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (req) => {
      const b = await builds.get(req.params.id);
      if (!b) throw new BuildNotFoundError(req.params.id);
      return { ...(await viewOf(b, queue, base())), pageUrl: links.buildUrl(b.id) };
    },
  );

  app.get(
    '/builds',
    {
      schema: {
        summary: 'List builds',
        description: 'Newest first, in pages (pass `next` back as `cursor`); filter by repo, branch, state.',
        tags: ['builds'],
        security,
        querystring: BuildListQuery,
        response: { 200: BuildList, ...errorResponses(400, 401, 403) },
      },
    },
    async (req) => {
      const q = req.query;
      const page = await builds.list({
        repo: q.repo,
        branch: q.branch,
        state: q.state,
        limit: q.limit,
        before: q.cursor ? Number(q.cursor) : undefined,
      });
      const views = await Promise.all(page.builds.map((b) => viewOf(b, queue, base())));
      return page.next === undefined ? { builds: views } : { builds: views, next: String(page.next) };
    },
  );

  app.post(
    '/builds/:id/cancel',
    {
      config: { scope: 'submit' },
      schema: {
        summary: 'Cancel a build',
        description: 'Its queued jobs never start, its running ones are stopped; 409 when it has finished.',
        tags: ['builds'],
        security,
        params: z.object({ id: BuildId }),
        response: { 202: BuildView, ...errorResponses(400, 401, 403, 404, 409) },
      },
    },
    async (req, reply) =>
      reply.code(202).send(await viewOf(await builds.cancel(req.params.id), queue, base())),
  );

  app.post(
    '/builds/:id/restart',
    {
      config: { scope: 'submit' },
      schema: {
        summary: 'Restart a build',
        description:
          'Runs a finished build again: every job, or with `failed=1` the jobs that did not pass (from the first stage that has one). 409 while it runs.',
        tags: ['builds'],
        security,
        params: z.object({ id: BuildId }),
        querystring: z.object({ failed: Flag.optional() }),
        response: { 202: BuildView, ...errorResponses(400, 401, 403, 404, 409, 503) },
      },
    },
    async (req, reply) =>
      reply
        .code(202)
        .send(
          await viewOf(
            await builds.restart(req.params.id, { failedOnly: req.query.failed ?? false }),
            queue,
            base(),
          ),
        ),
  );

  app.post(
    '/jobs/:id/restart',
    {
      config: { scope: 'submit' },
      schema: {
        summary: 'Restart a job',
        description:
          "A new run of a finished job. A job of an API build: a new job in the same place of its build (the build's record keeps the earlier runs in `previous`). A job of a GitHub build: the GitHub App's re-run, so a new check run of the same name follows it. A job submitted alone: a new job of the same spec (409 when it had secrets: they are not kept after a job ends). Both records link the runs: the new one's `restartOf`, the old one's `restartedBy`. 409 while the job is queued or running, or for a run that was restarted already (restart the newest); 404 for an unknown job.",
        tags: ['builds', 'jobs'],
        security,
        params: z.object({ id: JobId }),
        response: {
          202: z.object({
            /** The new run. */
            job: z.string(),
            /** The job restarted. */
            previous: z.string(),
            kind: z.enum(['api-build', 'github-build', 'job']),
            /** The API build of the job, when it is of one. */
            build: BuildView.optional(),
          }),
          ...errorResponses(400, 401, 403, 404, 409, 503),
        },
      },
    },
    async (req, reply) => {
      const r = await builds.restartJob(req.params.id, { clientId: req.clientId });
      return reply.code(202).send({
        job: r.jobId,
        previous: r.previous,
        kind: r.kind,
        ...(r.build ? { build: await viewOf(r.build, queue, base()) } : {}),
      });
    },
  );
};

/** An AbortSignal that fires when the response ends or its connection closes (then git has no reader). */
function abortOnClose(raw: { once(e: 'close', f: () => void): unknown }): AbortSignal {
  const ac = new AbortController();
  raw.once('close', () => ac.abort());
  return ac.signal;
}

/** git's smart HTTP for uploads (fetch only), outside /v1: workers fetch with the unguessable upload id, no token. */
export const uploadGitRoutes: FastifyPluginAsyncZod<{ uploads: Uploads }> = async (app, { uploads }) => {
  app.addContentTypeParser(
    'application/x-git-upload-pack-request',
    { parseAs: 'buffer', bodyLimit: 16 * 1024 * 1024 },
    (_req, body, done) => done(null, body),
  );
  const Params = z.object({ id: z.string().regex(/^u[0-9a-f]{24}$/, 'an upload id') });
  app.get(
    '/git/uploads/:id.git/info/refs',
    {
      schema: {
        hide: true,
        params: Params,
        querystring: z.object({ service: z.literal('git-upload-pack') }),
      },
    },
    async (req, reply) => {
      if (!(await uploads.get(req.params.id))) return reply.code(404).send('no such upload\n');
      const r = await serveUploadGit({
        dir: uploads.dir,
        path: `/${req.params.id}.git/info/refs`,
        query: 'service=git-upload-pack',
        method: 'GET',
      });
      return reply.code(r.status).headers(r.headers).send(r.body);
    },
  );
  app.post(
    '/git/uploads/:id.git/git-upload-pack',
    { schema: { hide: true, params: Params } },
    async (req, reply) => {
      if (!(await uploads.get(req.params.id))) return reply.code(404).send('no such upload\n');
      const r = await serveUploadGit({
        dir: uploads.dir,
        path: `/${req.params.id}.git/git-upload-pack`,
        query: '',
        method: 'POST',
        contentType: req.headers['content-type'],
        body: req.body as Buffer,
        signal: abortOnClose(reply.raw),
      });
      return reply.code(r.status).headers(r.headers).send(r.body);
    },
  );
};
