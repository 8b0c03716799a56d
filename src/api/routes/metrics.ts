import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { Gauge, Registry } from 'prom-client';
import { JOB_STATES, toError } from '../../core/index.ts';
import type { ApiDeps } from '../api-deps.ts';
import { isForgotten } from './nodes.ts';

/** How long a scrape waits for Redis (Prometheus's own scrape timeout defaults to 10 s). */
const READ_TIMEOUT_MS = 3000;

/**
 * /metrics for Prometheus: the fleet and the queues as the control plane sees them, read at
 * scrape time. When Redis does not answer the scrape still succeeds, with `archway_redis_ready 0`
 * and nothing else of the fleet (a failed scrape would hide why), so an alert can name Redis.
 */
export const metricsRoutes: FastifyPluginAsyncZod<{ deps: ApiDeps; lostRetentionMs: number }> = async (
  app,
  { deps, lostRetentionMs },
) => {
  const registry = new Registry();
  const gauge = (name: string, help: string, labelNames: string[] = []) =>
    new Gauge({ name: `archway_${name}`, help, labelNames, registers: [registry] });
  const redisReady = gauge(
    'redis_ready',
    'Whether the last read of the fleet from Redis at this scrape worked (1) or not (0)',
  );
  const nodes = gauge('nodes', 'Nodes by arch and state (lost counted apart)', ['arch', 'state']);
  const healthy = gauge('healthy_nodes', 'Live nodes that take jobs (active, not asked to drain), per arch', [
    'arch',
  ]);
  const depth = gauge('queue_depth', 'Jobs waiting per arch', ['arch']);
  const oldest = gauge(
    'queue_oldest_wait_seconds',
    'Age of the oldest waiting job of the arch since it was submitted (0 when none waits)',
    ['arch'],
  );
  const jobs = gauge('jobs', 'Jobs by state', ['state']);
  const pool = gauge(
    'pool_nodes',
    "Pool settings per arch: min, max and the scaler's desired nodes (desired absent until a scaler ran)",
    ['arch', 'kind'],
  );
  const slots = gauge('slots', 'Slots of live nodes per arch, total and busy', ['arch', 'kind']);
  const scalerSeen = gauge(
    'scaler_last_report_timestamp_seconds',
    "When the acting scaler last reported on the arch's pool (Unix time; absent until a scaler ran)",
    ['arch'],
  );
  const forgotten = gauge(
    'nodes_lost_unlisted',
    'Lost nodes past ARCHWAY_LOST_NODE_RETENTION_SECONDS: out of `archway nodes`, shown by `nodes --all` until their record is deleted',
    ['arch'],
  );
  const status = deps.poolStatus;
  const fleet = [nodes, healthy, depth, oldest, jobs, pool, slots, scalerSeen, forgotten];

  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    for (const g of fleet) g.reset();
    let timer: NodeJS.Timeout | undefined;
    try {
      const [all, counts] = await Promise.race([
        Promise.all([
          status.readAll(),
          Promise.all(JOB_STATES.map((state) => deps.redis.zcard(deps.keys.jobsByState(state)))),
        ]),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`Redis did not answer within ${READ_TIMEOUT_MS} ms`)),
            READ_TIMEOUT_MS,
          );
        }),
      ]);
      for (const s of all) {
        const arch = s.pool.arch;
        pool.set({ arch, kind: 'min' }, s.pool.min);
        pool.set({ arch, kind: 'max' }, s.pool.max);
        if (s.pool.desired !== undefined) pool.set({ arch, kind: 'desired' }, s.pool.desired);
        if (s.pool.scaler) scalerSeen.set({ arch }, s.pool.scaler.seenAt / 1000);
        for (const state of ['active', 'draining', 'quarantined', 'lost']) {
          nodes.set(
            { arch, state },
            s.nodes.filter((n) => (state === 'lost' ? n.lost : !n.lost && n.state === state)).length,
          );
        }
        healthy.set({ arch }, s.healthyNodes);
        forgotten.set({ arch }, s.nodes.filter((n) => isForgotten(n, lostRetentionMs)).length);
        const live = s.nodes.filter((n) => !n.lost);
        slots.set(
          { arch, kind: 'total' },
          live.reduce((sum, n) => sum + n.slots, 0),
        );
        slots.set({ arch, kind: 'busy' }, s.running);
        depth.set({ arch }, s.waiting);
        oldest.set({ arch }, (s.oldestWaitingMs ?? 0) / 1000);
      }
      for (const [i, state] of JOB_STATES.entries()) jobs.set({ state }, counts[i] ?? 0);
      redisReady.set(1);
    } catch (e) {
      for (const g of fleet) g.reset();
      redisReady.set(0);
      deps.logger.warn({ err: toError(e).message }, 'metrics: cannot read the fleet from Redis');
    } finally {
      clearTimeout(timer);
    }
    return reply.header('content-type', registry.contentType).send(await registry.metrics());
  });
};
