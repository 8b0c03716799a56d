import fastifySwagger, { type SwaggerTransformObject } from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyReply, type FastifyRequest, LogController } from 'fastify';
import {
  createJsonSchemaTransform,
  createJsonSchemaTransformObject,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import {
  type ApiConfig,
  blobDirOf,
  ceilingsSet,
  DEFAULT_POOL_SIZE_GIB,
  FINAL_STATES,
  hostCeilings,
} from '../core/index.ts';
import type { ApiDeps } from './api-deps.ts';
import { createAuthHook, createTokenVerifier } from './auth.ts';
import { createErrorHandler, notFoundHandler } from './error-handler.ts';
import { createLogFanout } from './log-fanout.ts';
import { createPageLinks, pageRoutes } from './pages/index.ts';
import { buildRoutes, uploadGitRoutes } from './routes/builds.ts';
import { healthRoutes } from './routes/health.ts';
import { imageRoutes } from './routes/images.ts';
import { jobRoutes } from './routes/jobs.ts';
import { limitRoutes } from './routes/limits.ts';
import { logRoutes } from './routes/log.ts';
import { metricsRoutes } from './routes/metrics.ts';
import { nodeRoutes } from './routes/nodes.ts';
import { poolRoutes } from './routes/pools.ts';
import { apiSchemas } from './schemas.ts';

export const API_VERSION = '0.1.0';

/**
 * One line per request, at debug, instead of fastify's two at info: after a short session with
 * `up`, 150 of 165 terminal lines were `incoming request` / `request completed` (issue #13).
 * A request that errored is still logged at error.
 */
class RequestLogAtDebug extends LogController {
  override incomingRequest(): void {}
  override requestCompleted(error: Error | null | undefined, req: FastifyRequest, reply: FastifyReply): void {
    if (error) {
      reply.log.error({ res: reply, err: error, responseTime: reply.elapsedTime }, 'request errored');
      return;
    }
    req.log.debug(
      { method: req.method, url: req.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime) },
      'request',
    );
  }
}

/**
 * The HTTP API as a fastify instance, ready to `inject()` or `listen()`; it never listens by itself.
 * Everything under /v1 needs a bearer token; /healthz, /readyz, /openapi.json and /docs do not.
 */
export function buildApp(config: ApiConfig, deps: ApiDeps) {
  const app = Fastify({
    // A child with its own redaction: the Authorization header must never reach a log line.
    loggerInstance: deps.logger.child(
      { component: 'api' },
      {
        redact: {
          paths: ['req.headers.authorization', 'headers.authorization', 'authorization', '*.authorization'],
          censor: '[secure]',
        },
      },
    ),
    logController: new RequestLogAtDebug(),
    bodyLimit: config.ARCHWAY_BODY_LIMIT_BYTES,
    // Follows are ended by the preClose hook below; idle keep-alive sockets need not hold a shutdown.
    forceCloseConnections: 'idle',
  }).withTypeProvider<ZodTypeProvider>();

  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  // JSON only: without this, fastify parses text/plain into a string, and a wrong body would be a 400, not a 415.
  app.removeContentTypeParser('text/plain');
  app.setErrorHandler(
    createErrorHandler({
      bodyLimit: config.ARCHWAY_BODY_LIMIT_BYTES,
      redisDown: () => deps.redis.status !== 'ready',
    }),
  );
  app.setNotFoundHandler(notFoundHandler);
  app.decorateRequest('clientId', '');
  app.decorateRequest('clientAdmin', false);

  // The most one job may ask for: the operator's ARCHWAY_MAX_*, else this host's own measure.
  const ceilings = hostCeilings({
    poolPath: config.ARCHWAY_POOL_PATH,
    poolSizeGiB: DEFAULT_POOL_SIZE_GIB,
    set: ceilingsSet(config),
  });

  const follows = new Set<AbortController>();
  const fanout = createLogFanout({
    redis: deps.redis,
    keys: deps.keys,
    createBlockingRedis: deps.createBlockingRedis,
    isFinished: async (id) => {
      const job = await deps.queue.get(id);
      return !job || FINAL_STATES.includes(job.state);
    },
    maxPerJob: config.ARCHWAY_LOG_FOLLOWERS_PER_JOB,
    maxTotal: config.ARCHWAY_LOG_FOLLOWERS_MAX,
    stallMs: config.ARCHWAY_LOG_FOLLOW_STALL_SECONDS * 1000,
  });
  const links =
    deps.pageLinks ??
    createPageLinks({
      secret: config.ARCHWAY_PAGE_SECRET,
      publicUrl: () => config.ARCHWAY_PUBLIC_URL ?? '',
      linkSeconds: config.ARCHWAY_PAGE_LINK_DAYS * 86_400,
      sessionSeconds: config.ARCHWAY_PAGE_SESSION_HOURS * 3600,
    });
  app.addHook('preClose', async () => {
    for (const f of follows) f.abort();
  });
  app.addHook('onClose', async () => fanout.close());

  const docsSkip = [
    '/docs',
    '/docs/',
    '/docs/json',
    '/docs/yaml',
    '/docs/static/*',
    '/docs/*',
    '/openapi.json',
  ];
  app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'archway',
        description:
          'Submit CI jobs to multi-arch builders, follow their logs, cancel them. See docs/api.md.',
        version: API_VERSION,
      },
      components: {
        securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      },
      tags: [
        { name: 'jobs', description: 'Jobs and their logs' },
        { name: 'nodes', description: 'Worker nodes, drain and undrain' },
        { name: 'pools', description: 'Pools per arch: settings, load, estimated wait' },
        { name: 'limits', description: 'Concurrency caps per repository and per label' },
        { name: 'images', description: 'Image blobs and sync state' },
        { name: 'health', description: 'Liveness and readiness' },
      ],
    },
    transform: createJsonSchemaTransform({ skipList: docsSkip, schemaRegistry: apiSchemas }),
    transformObject: withoutUnusedSchemas(createJsonSchemaTransformObject({ schemaRegistry: apiSchemas })),
  });
  app.register(fastifySwaggerUi, { routePrefix: '/docs' });

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  app.register(healthRoutes, { deps });
  app.register(metricsRoutes, { deps, lostRetentionMs: config.ARCHWAY_LOST_NODE_RETENTION_SECONDS * 1000 });
  if (deps.webhookRoutes) app.register(deps.webhookRoutes);
  if (deps.builds) app.register(uploadGitRoutes, { uploads: deps.builds.uploads });
  app.register(pageRoutes, {
    deps,
    links,
    tokens: config.tokens,
    publicLogs: config.ARCHWAY_PUBLIC_LOGS,
    secureCookie: (config.ARCHWAY_PUBLIC_URL ?? '').startsWith('https:'),
    follows,
    fanout,
  });
  app.register(
    async (v1) => {
      v1.addHook('onRequest', createAuthHook(createTokenVerifier(config.tokens)));
      await v1.register(jobRoutes, { deps, ceilings, links });
      await v1.register(logRoutes, { deps, follows, fanout });
      await v1.register(nodeRoutes, {
        deps,
        lostRetentionMs: config.ARCHWAY_LOST_NODE_RETENTION_SECONDS * 1000,
      });
      await v1.register(imageRoutes, { deps, blobDir: blobDirOf(config) });
      await v1.register(poolRoutes, { deps });
      await v1.register(limitRoutes, { deps });
      if (deps.builds) await v1.register(buildRoutes, { ...deps.builds, queue: deps.queue, links });
    },
    { prefix: '/v1' },
  );
  return app;
}

export type ApiApp = ReturnType<typeof buildApp>;

/**
 * fastify-type-provider-zod emits every named schema twice (`Job` for responses, `JobInput` for
 * requests); drop the components that nothing references, so the document lists what is used.
 */
function withoutUnusedSchemas(transform: SwaggerTransformObject): SwaggerTransformObject {
  return (input) => {
    const doc = transform(input) as { components?: { schemas?: Record<string, unknown> } };
    const schemas = doc.components?.schemas;
    if (!schemas) return doc as ReturnType<SwaggerTransformObject>;
    const refs = (value: unknown) =>
      [...JSON.stringify(value).matchAll(/"#\/components\/schemas\/([^"]+)"/g)].map((m) => m[1] as string);
    const used = new Set(refs({ ...doc, components: { ...doc.components, schemas: {} } }));
    for (const pending = [...used]; pending.length > 0; ) {
      for (const ref of refs(schemas[pending.pop() as string])) {
        if (!used.has(ref)) {
          used.add(ref);
          pending.push(ref);
        }
      }
    }
    const kept = Object.fromEntries(Object.entries(schemas).filter(([id]) => used.has(id)));
    return { ...doc, components: { ...doc.components, schemas: kept } } as ReturnType<SwaggerTransformObject>;
  };
}
