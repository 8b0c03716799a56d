import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { Gauge, Registry } from 'prom-client';
import { ARCHES, JOB_STATES } from '../../core/index.ts';
import type { ApiDeps } from '../api-deps.ts';
import { isForgotten } from './nodes.ts';

/** /metrics for Prometheus: the fleet and the queues as the control plane sees them, read at scrape time. */
export const metricsRoutes: FastifyPluginAsyncZod<{ deps: ApiDeps; lostRetentionMs: number }> = async (
  app,
  { deps, lostRetentionMs },
) => {
  const registry = new Registry();
  const nodes = new Gauge({
    name: 'archway_nodes',
    help: 'Nodes by arch and state (lost counted apart)',
    labelNames: ['arch', 'state'] as const,
    registers: [registry],
  });
  const forgotten = new Gauge({
    name: 'archway_nodes_lost_unlisted',
    help: 'Lost nodes past ARCHWAY_LOST_NODE_RETENTION_SECONDS: out of `archway nodes`, shown by `nodes --all` until their record is deleted',
    labelNames: ['arch'] as const,
    registers: [registry],
  });
  const depth = new Gauge({
    name: 'archway_queue_depth',
    help: 'Jobs waiting per arch',
    labelNames: ['arch'] as const,
    registers: [registry],
  });
  const jobs = new Gauge({
    name: 'archway_jobs',
    help: 'Jobs by state',
    labelNames: ['state'] as const,
    registers: [registry],
  });
  const pool = new Gauge({
    name: 'archway_pool_nodes',
    help: "Pool settings per arch: min, max and the scaler's desired nodes (desired absent until a scaler ran)",
    labelNames: ['arch', 'kind'] as const,
    registers: [registry],
  });
  const { pools } = deps;
  const slots = new Gauge({
    name: 'archway_slots',
    help: 'Slots of live nodes per arch, total and busy',
    labelNames: ['arch', 'kind'] as const,
    registers: [registry],
  });

  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    nodes.reset();
    slots.reset();
    pool.reset();
    for (const p of await pools.list()) {
      pool.set({ arch: p.arch, kind: 'min' }, p.min);
      pool.set({ arch: p.arch, kind: 'max' }, p.max);
      if (p.desired !== undefined) pool.set({ arch: p.arch, kind: 'desired' }, p.desired);
    }
    const list = await deps.nodes.list();
    for (const arch of ARCHES) {
      for (const state of ['active', 'draining', 'quarantined', 'lost']) {
        nodes.set(
          { arch, state },
          list.filter((n) => n.arch === arch && (state === 'lost' ? n.lost : !n.lost && n.state === state))
            .length,
        );
      }
      forgotten.set({ arch }, list.filter((n) => n.arch === arch && isForgotten(n, lostRetentionMs)).length);
      const live = list.filter((n) => n.arch === arch && !n.lost);
      slots.set(
        { arch, kind: 'total' },
        live.reduce((s, n) => s + n.slots, 0),
      );
      slots.set(
        { arch, kind: 'busy' },
        live.reduce((s, n) => s + n.busy, 0),
      );
      depth.set({ arch }, await deps.queue.depth(arch));
    }
    for (const state of JOB_STATES) jobs.set({ state }, await deps.redis.zcard(deps.keys.jobsByState(state)));
    return reply.header('content-type', registry.contentType).send(await registry.metrics());
  });
};
