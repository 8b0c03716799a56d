import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { ArchwayError, InvalidInputError, toError, UnauthorizedError } from '../core/index.ts';
import type { ErrorBody } from './schemas.ts';

/** Fastify's own request errors, in archway's words. */
const FASTIFY_CODES: Record<string, { code: string; message: (limit: number) => string; field?: string }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: {
    code: 'BODY_TOO_LARGE',
    message: (limit) => `the request body is larger than ${limit} bytes`,
  },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: {
    code: 'UNSUPPORTED_MEDIA_TYPE',
    message: () => 'send the body as JSON, with Content-Type: application/json',
  },
  FST_ERR_CTP_INVALID_JSON_BODY: {
    code: 'INVALID_INPUT',
    field: 'body',
    message: () => 'body: not valid JSON',
  },
  FST_ERR_CTP_EMPTY_JSON_BODY: {
    code: 'INVALID_INPUT',
    field: 'body',
    message: () => "body: empty, but Content-Type is 'application/json'",
  },
};

const body = (code: string, message: string, field?: string): ErrorBody => ({
  error: field === undefined ? { code, message } : { code, message, field },
});

/** Seconds a client is told to wait (Retry-After) while the API cannot reach Redis. */
export const REDIS_DOWN_RETRY_AFTER_SECONDS = 5;

/** Errors of a Redis that is not there (ioredis's own, by name: it exports no classes for them). */
function isRedisOutage(e: Error): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return (
    e.name === 'MaxRetriesPerRequestError' ||
    e.message === 'Connection is closed.' ||
    code === 'ECONNREFUSED' ||
    code === 'ECONNRESET' ||
    code === 'ETIMEDOUT'
  );
}

/**
 * The API's one error handler: zod validation errors become 400 INVALID_INPUT naming the field,
 * an ArchwayError answers with its own status and code, fastify's request errors (413, 415, bad
 * JSON) with archway's codes; a failure while Redis is away is a 503 REDIS_UNAVAILABLE with
 * Retry-After (issue #10: a submit during an outage was a 500); anything else is a logged 500.
 */
export function createErrorHandler(o: {
  bodyLimit: number;
  /** Whether the API's Redis connection is down now. Default: never. */
  redisDown?: () => boolean;
}) {
  return function errorHandler(error: FastifyError, req: FastifyRequest, reply: FastifyReply) {
    if (hasZodFastifySchemaValidationErrors(error)) {
      const issue = error.validation[0];
      const path = (issue?.instancePath ?? '/').split('/').filter(Boolean);
      // A strict object reports unknown keys on the object itself: name the key.
      const keys = issue?.params.keys;
      const unknown = issue?.keyword === 'unrecognized_keys' && Array.isArray(keys) ? String(keys[0]) : '';
      const field =
        [...path, ...(unknown ? [unknown] : [])].join('.') ||
        (error.validationContext === 'body' ? 'body' : (error.validationContext ?? 'request'));
      const message = unknown ? 'unknown field' : (issue?.message ?? 'invalid');
      return reply.code(400).send(body('INVALID_INPUT', `${field}: ${message}`, field));
    }
    if (error instanceof ArchwayError) {
      if (error instanceof UnauthorizedError) reply.header('www-authenticate', 'Bearer realm="archway"');
      if (error.httpStatus >= 500) req.log.error({ err: error }, 'request failed');
      return reply
        .code(error.httpStatus)
        .send(body(error.code, error.message, error instanceof InvalidInputError ? error.field : undefined));
    }
    const known = FASTIFY_CODES[error.code];
    if (known) {
      const status = error.statusCode ?? 400;
      return reply.code(status).send(body(known.code, known.message(o.bodyLimit), known.field));
    }
    if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
      return reply.code(error.statusCode).send(body('BAD_REQUEST', error.message));
    }
    const err = toError(error);
    if (o.redisDown?.() || isRedisOutage(err)) {
      req.log.warn({ err: err.message }, 'request failed: Redis is unavailable');
      return reply
        .code(503)
        .header('retry-after', String(REDIS_DOWN_RETRY_AFTER_SECONDS))
        .send(body('REDIS_UNAVAILABLE', 'the API cannot reach Redis now; retry shortly'));
    }
    req.log.error({ err }, 'request failed');
    return reply.code(500).send(body('INTERNAL', 'internal error; the API logged the details'));
  };
}

export function notFoundHandler(req: FastifyRequest, reply: FastifyReply) {
  return reply.code(404).send(body('NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`));
}
