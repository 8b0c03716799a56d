import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { findImage, JobNotFoundError } from '../../../queue/index.ts';
import {
  type Ceilings,
  checkCeilings,
  checkSourceUrl,
  ImageNotFoundError,
  InvalidInputError,
  JobSubmission,
} from '../../core/index.ts';
import type { ApiDeps } from '../api-deps.ts';
import type { PageLinks } from '../pages/index.ts';
import { createQueuePlaceReader } from '../queue-place.ts';
import { CreatedJob, errorResponses, JobList, JobParams, JobView, ListQuery, maskJob } from '../schemas.ts';

const security = [{ bearer: [] }];

/** Submit, read, list and cancel jobs (under /v1). */
export const jobRoutes: FastifyPluginAsyncZod<{
  deps: ApiDeps;
  ceilings: Ceilings;
  links: PageLinks;
}> = async (app, { deps, ceilings, links }) => {
  const { queue, nodes } = deps;
  const { pools, catalog } = deps;

  const queuePlace = createQueuePlaceReader(deps);

  app.post(
    '/jobs',
    {
      config: { scope: 'submit' },
      schema: {
        summary: 'Submit a job',
        description:
          "Writes the job and queues it for its arch. With an Idempotency-Key, a retried request returns the first job (200) instead of making another; the same key with a different body is a 409. An image that neither the catalog nor a live worker of the arch holds is a 404 IMAGE_NOT_FOUND listing the images the arch has. An arch with no live worker is accepted, and `warnings` says so; an arch whose pool is disabled (max 0) is refused with 409 POOL_DISABLED. A resource over the operator's ceiling (ARCHWAY_MAX_CPUS, _MEMORY_MIB, _PIDS, _DISK_MIB) or under what the kernel can apply is a 400 naming the field and the limit.",
        tags: ['jobs'],
        security,
        headers: z
          .object({
            'idempotency-key': z
              .string()
              .regex(/^[\x21-\x7e]{1,255}$/, '1-255 printable ASCII characters')
              .optional(),
          })
          .loose(),
        body: JobSubmission,
        response: {
          200: CreatedJob,
          201: CreatedJob,
          ...errorResponses(400, 401, 403, 404, 409, 413, 415),
        },
      },
    },
    async (req, reply) => {
      const spec = req.body;
      if (spec.network === 'egress' && deps.egress === false)
        throw new InvalidInputError(
          'network',
          "egress is turned off on this installation (ARCHWAY_EGRESS=false): use 'none', or ask the operator",
        );
      // Over an operator's ceiling: 400 naming the field, the ceiling and its setting.
      checkCeilings(spec.resources, ceilings);
      // Fetched on a worker's host: only remote https and git URLs (400 naming source.git otherwise).
      if (spec.source) await checkSourceUrl(spec.source.git, deps.sourcePolicy ?? {});
      // An image neither the catalog nor a live node of the arch holds (a typo) would fail on every
      // node: 404 naming it and the images there are. When nothing reports images for the arch
      // (no catalog entry, no live node that says what it holds), the node decides at run time.
      const image = await findImage({ catalog, nodes }, spec.image, spec.arch);
      if (!image.found && image.known.length > 0)
        throw new ImageNotFoundError(
          `no image '${spec.image}' for ${spec.arch}: neither the catalog nor a live node of ${spec.arch} holds it; ${spec.arch} has: ${image.known.join(', ')}`,
        );
      // A disabled pool (max 0) would never run it: refused (409 POOL_DISABLED) rather than left waiting.
      await pools.assertEnabled(spec.arch);
      // Never a silent fallback to another arch: the job waits for its own, and the user is told.
      const live = await nodes.live(spec.arch);
      const warnings =
        live.length === 0 ? [`no live worker for ${spec.arch}: the job waits until one joins`] : [];
      const { job, created } = await queue.submit(spec, {
        idempotencyKey: req.headers['idempotency-key'],
        clientId: req.clientId,
        warnings,
      });
      return reply
        .code(created ? 201 : 200)
        .header('location', `/v1/jobs/${job.id}`)
        .send({ job: maskJob(job, { admin: req.clientAdmin }), warnings: created ? warnings : job.warnings });
    },
  );

  app.get(
    '/jobs/:id',
    {
      schema: {
        summary: 'Get a job',
        description:
          "The job record; secret values are replaced by [secure]. `pageUrl` is a signed link to the job's page (its live log), valid for ARCHWAY_PAGE_LINK_DAYS. A queued job has `queue`: where it stands in its arch's queue (`waiting`: its 1-based `position` of the `of` jobs in line, lower `priority` first, and its estimated wait; `delayed`: a retry in back-off, in no line `until` then; `held`: by a concurrency cap, `waitReason` says which; `starting`: a node has taken it).",
        tags: ['jobs'],
        security,
        params: JobParams,
        response: { 200: JobView, ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (req) => {
      const job = await queue.get(req.params.id);
      if (!job) throw new JobNotFoundError(req.params.id);
      // pageUrl: the job's page for whoever holds the link (ARCHWAY_PAGE_LINK_DAYS).
      const view = { ...maskJob(job, { admin: req.clientAdmin }), pageUrl: links.jobUrl(job.id) };
      const place = job.state === 'queued' ? await queuePlace(job) : undefined;
      return place ? { ...view, queue: place } : view;
    },
  );

  app.get(
    '/jobs',
    {
      schema: {
        summary: 'List jobs',
        description: 'Newest first, in pages: pass `next` back as `cursor` for the next page.',
        tags: ['jobs'],
        security,
        querystring: ListQuery,
        response: { 200: JobList, ...errorResponses(400, 401, 403) },
      },
    },
    async (req) => {
      const q = req.query;
      const page = await queue.list({
        limit: q.limit,
        ...(q.state ? { state: q.state } : {}),
        ...(q.arch ? { arch: q.arch } : {}),
        ...(q.label ? { label: q.label } : {}),
        ...(q.cursor ? { before: Number(q.cursor) } : {}),
      });
      const jobs = page.jobs.map((j) => maskJob(j, { admin: req.clientAdmin }));
      return page.next === undefined ? { jobs } : { jobs, next: String(page.next) };
    },
  );

  app.post(
    '/jobs/:id/cancel',
    {
      config: { scope: 'submit' },
      schema: {
        summary: 'Cancel a job',
        description:
          'A queued job is canceled at once and never starts; a running one is stopped by its worker within a second (the returned job has cancelRequested: true until then).',
        tags: ['jobs'],
        security,
        params: JobParams,
        response: { 202: JobView, ...errorResponses(400, 401, 403, 404, 409) },
      },
    },
    async (req, reply) => {
      const job = await queue.cancel(req.params.id);
      return reply.code(202).send(maskJob(job, { admin: req.clientAdmin }));
    },
  );
};
