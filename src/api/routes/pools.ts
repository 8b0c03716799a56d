import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { POOL_LIMITS, type PoolStatus } from '../../../queue/index.ts';
import { ARCHES, ArchInput } from '../../core/index.ts';
import type { ApiDeps } from '../api-deps.ts';
import { errorResponses, WaitEstimateView } from '../schemas.ts';

const security = [{ bearer: [] }];

const nodes = (max: number) => z.int().min(0).max(max);

export const PoolView = z.object({
  arch: z.enum(ARCHES),
  /** Nodes kept even with nothing to do. */
  min: z.int(),
  /** Nodes the scaler never goes beyond; 0 = disabled (jobs for the arch are refused). */
  max: z.int(),
  /** Slots of each node a provider starts. */
  slotsPerNode: z.int(),
  /** False while the defaults apply (min 0, max 4, 2 slots). */
  configured: z.boolean(),
  /** Nodes the scaler steers to; null until a scaler has run. */
  desired: z.int().nullable(),
  /** Jobs waiting for a slot (queue depth, less the held jobs). */
  waiting: z.int(),
  /** Jobs held by a concurrency cap (their repository's or a label's): they wait for their group, not for a slot. */
  held: z.int(),
  /** Jobs running (busy slots of live nodes). */
  running: z.int(),
  /** Live nodes that take jobs. */
  healthyNodes: z.int(),
  /** Slots of the healthy nodes, and the free ones among them. */
  totalSlots: z.int(),
  freeSlots: z.int(),
  /** Nodes draining (leaving once their jobs finish), quarantined, lost. */
  drainingNodes: z.int(),
  quarantinedNodes: z.int(),
  lostNodes: z.int(),
  /** Age of the oldest waiting job; null when none waits. */
  oldestWaitingSeconds: z.number().nullable(),
  /** Median run time of the arch's recent finished jobs; null before any. */
  medianJobSeconds: z.number().nullable(),
  /** How long a job submitted now may wait for a node; null when unknown (see `estimate`). */
  estimatedWaitSeconds: z.number().nullable(),
  estimate: WaitEstimateView,
  /** The acting scaler's last report on this pool; null when none has reported. */
  scaler: z.object({ provider: z.string(), lastSeen: z.string(), reactionSeconds: z.number() }).nullable(),
  updatedAt: z.string().nullable(),
});
export type PoolView = z.infer<typeof PoolView>;

const secs = (ms: number | undefined) => (ms === undefined ? null : Math.round(ms / 100) / 10);

function view(s: PoolStatus): PoolView {
  const live = s.nodes.filter((n) => !n.lost);
  const p = s.pool;
  return {
    arch: p.arch,
    min: p.min,
    max: p.max,
    slotsPerNode: p.slotsPerNode,
    configured: p.configured,
    desired: p.desired ?? null,
    waiting: s.waiting,
    held: s.held,
    running: s.running,
    healthyNodes: s.healthyNodes,
    totalSlots: s.totalSlots,
    freeSlots: s.freeSlots,
    drainingNodes: live.filter((n) => n.state === 'draining' || n.drainRequested).length,
    quarantinedNodes: live.filter((n) => n.state === 'quarantined' && !n.drainRequested).length,
    lostNodes: s.nodes.length - live.length,
    oldestWaitingSeconds: secs(s.oldestWaitingMs),
    medianJobSeconds: secs(s.medianDurationMs),
    estimatedWaitSeconds: s.estimate.seconds,
    estimate: { basis: s.estimate.basis, note: s.estimate.note },
    scaler: p.scaler
      ? {
          provider: p.scaler.provider,
          lastSeen: new Date(p.scaler.seenAt).toISOString(),
          reactionSeconds: secs(p.scaler.reactionMs) ?? 0,
        }
      : null,
    updatedAt: p.updatedAt ?? null,
  };
}

/** Pools per arch: their settings, load and estimated wait (under /v1). */
export const poolRoutes: FastifyPluginAsyncZod<{ deps: ApiDeps }> = async (app, { deps }) => {
  const { pools, poolStatus: status } = deps;

  app.get(
    '/pools',
    {
      schema: {
        summary: 'List pools',
        description:
          'Per arch: min, max, desired nodes and slots per node; waiting and running jobs, healthy nodes, the age of the oldest waiting job and the estimated wait of a job submitted now (docs/operations.md says how it is made).',
        tags: ['pools'],
        security,
        response: { 200: z.object({ pools: z.array(PoolView) }), ...errorResponses(401, 403) },
      },
    },
    async () => ({ pools: (await status.readAll()).map(view) }),
  );

  app.get(
    '/pools/:arch',
    {
      schema: {
        summary: 'Get a pool',
        description: 'One arch of `GET /v1/pools` (aliases such as aarch64 accepted).',
        tags: ['pools'],
        security,
        params: z.object({ arch: ArchInput }),
        response: { 200: PoolView, ...errorResponses(400, 401, 403) },
      },
    },
    async (req) => view(await status.read(req.params.arch)),
  );

  app.put(
    '/pools/:arch',
    {
      config: { scope: 'admin' },
      schema: {
        summary: 'Set a pool',
        description: `Sets min, max and slots per node of one arch's pool (the fields left out keep their values). 0 <= min <= max <= ${POOL_LIMITS.nodes}; 1 <= slotsPerNode <= ${POOL_LIMITS.slotsPerNode}. max 0 disables the pool: jobs for its arch are refused (409 POOL_DISABLED) and the scaler drains its nodes.`,
        tags: ['pools'],
        security,
        params: z.object({ arch: ArchInput }),
        body: z
          .strictObject({
            min: nodes(POOL_LIMITS.nodes).optional(),
            max: nodes(POOL_LIMITS.nodes).optional(),
            slotsPerNode: z.int().min(1).max(POOL_LIMITS.slotsPerNode).optional(),
          })
          .refine((b) => Object.keys(b).length > 0, 'set at least one of min, max, slotsPerNode'),
        response: { 200: PoolView, ...errorResponses(400, 401, 403, 415) },
      },
    },
    async (req) => {
      const b = req.body;
      await pools.set(req.params.arch, {
        ...(b.min === undefined ? {} : { min: b.min }),
        ...(b.max === undefined ? {} : { max: b.max }),
        ...(b.slotsPerNode === undefined ? {} : { slotsPerNode: b.slotsPerNode }),
      });
      req.log.info({ arch: req.params.arch, by: req.clientId, ...b }, 'pool changed');
      return view(await status.read(req.params.arch));
    },
  );
};
