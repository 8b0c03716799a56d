import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { assertNoEviction, toError } from '../../core/index.ts';
import type { ApiDeps } from '../api-deps.ts';

/** How long /readyz waits for Redis before it says not ready (a load balancer's probe must not hang). */
const READY_TIMEOUT_MS = 2000;

const Status = z.object({ status: z.enum(['ok', 'ready', 'unready']), error: z.string().optional() });

/** Liveness and readiness, without authentication (for load balancers and systemd). */
export const healthRoutes: FastifyPluginAsyncZod<{ deps: ApiDeps }> = async (app, { deps }) => {
  app.get(
    '/healthz',
    {
      schema: {
        summary: 'The process is up',
        tags: ['health'],
        response: { 200: Status },
      },
    },
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        summary: 'Redis answers and will not evict keys',
        tags: ['health'],
        response: { 200: Status, 503: Status },
      },
    },
    async (_req, reply) => {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          (async () => {
            await deps.redis.ping();
            await assertNoEviction(deps.redis);
          })(),
          new Promise((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`Redis did not answer within ${READY_TIMEOUT_MS} ms`)),
              READY_TIMEOUT_MS,
            );
          }),
        ]);
        return { status: 'ready' as const };
      } catch (e) {
        return reply.code(503).send({ status: 'unready' as const, error: toError(e).message });
      } finally {
        clearTimeout(timer);
      }
    },
  );
};
