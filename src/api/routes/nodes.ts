import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { HeldImage } from '../../../queue/index.ts';
import { ARCHES, ArchwayError } from '../../core/index.ts';
import type { ApiDeps } from '../api-deps.ts';
import { errorResponses } from '../schemas.ts';

const security = [{ bearer: [] }];

export const NodeView = z.object({
  id: z.string(),
  arch: z.enum(ARCHES),
  hostArch: z.string(),
  emulated: z.boolean(),
  slots: z.int(),
  busy: z.int(),
  state: z.enum(['active', 'draining', 'quarantined']),
  quarantineReason: z.string().optional(),
  drainRequested: z.boolean(),
  lost: z.boolean(),
  version: z.string(),
  startedAt: z.string(),
  lastSeen: z.string(),
  /** Image versions the node holds (reported by its sync agent). */
  images: z.array(HeldImage),
});

class NodeNotFoundError extends ArchwayError {
  constructor(id: string) {
    super('NODE_NOT_FOUND', `no node '${id}'`, { httpStatus: 404 });
  }
}

/** A node lost for longer than the retention: out of the default list (issue #10: dead records piled up). */
export const isForgotten = (n: { lost: boolean; silentMs: number }, retentionMs: number) =>
  n.lost && n.silentMs > retentionMs;

const view = (n: Awaited<ReturnType<ApiDeps['nodes']['list']>>[number]) => ({
  ...n,
  lastSeen: new Date(n.lastSeen).toISOString(),
});

/** Nodes (worker processes) and their drain (under /v1). */
export const nodeRoutes: FastifyPluginAsyncZod<{ deps: ApiDeps; lostRetentionMs: number }> = async (
  app,
  { deps, lostRetentionMs },
) => {
  app.get(
    '/nodes',
    {
      schema: {
        summary: 'List nodes',
        description:
          'Every registered node with its arch, emulation, slots, busy slots and state; `lost` when it has not heartbeat for 10 s. A node lost for longer than ARCHWAY_LOST_NODE_RETENTION_SECONDS (default 10 min) is listed only with `all=true`.',
        tags: ['nodes'],
        security,
        querystring: z.object({
          all: z
            .enum(['true', 'false', '1', '0'])
            .optional()
            .transform((v) => v === 'true' || v === '1'),
        }),
        response: { 200: z.object({ nodes: z.array(NodeView) }), ...errorResponses(400, 401, 403) },
      },
    },
    async (req) => ({
      nodes: (await deps.nodes.list())
        .filter((n) => req.query.all || !isForgotten(n, lostRetentionMs))
        .map(view),
    }),
  );
  for (const [action, drain] of [
    ['drain', true],
    ['undrain', false],
  ] as const) {
    app.post(
      `/nodes/:id/${action}`,
      {
        config: { scope: 'admin' },
        schema: {
          summary: drain ? 'Drain a node' : 'Undrain a node',
          description: drain
            ? 'The node takes no new job, finishes the running ones, deregisters and exits 0.'
            : 'A draining (or quarantined) node that has not left yet takes jobs again.',
          tags: ['nodes'],
          security,
          params: z.object({ id: z.string().min(1).max(128) }),
          response: { 202: z.object({ node: NodeView }), ...errorResponses(401, 403, 404) },
        },
      },
      async (req, reply) => {
        if (!(await deps.nodes.requestDrain(req.params.id, drain)))
          throw new NodeNotFoundError(req.params.id);
        const node = await deps.nodes.get(req.params.id);
        if (!node) throw new NodeNotFoundError(req.params.id);
        return reply.code(202).send({ node: view({ ...node, drainRequested: drain }) });
      },
    );
  }
};
