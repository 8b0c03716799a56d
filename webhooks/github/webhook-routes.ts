import { createHmac, timingSafeEqual } from 'node:crypto';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import { ArchwayError, InvalidInputError, type Keys, toError } from '../../src/core/index.ts';
import { isHandled } from './payloads.ts';
import { SignatureInvalidError } from './signature-invalid-error.ts';

/** A verified delivery, as it waits in the `github-events` queue. */
export interface Delivery {
  id: string;
  event: string;
  /** The payload's JSON text, as GitHub sent it. */
  payload: string;
}

export interface WebhookRoutesOptions {
  /** The current secret first, then previous ones still accepted (rotation). */
  secrets: readonly string[];
  redis: Redis;
  keys: Keys;
  /** Puts a verified delivery on the queue; must not call GitHub. */
  enqueue: (d: Delivery) => Promise<void>;
  /** How long a delivery id is remembered, in seconds. Default 7 days (GitHub redelivers for 3). */
  dedupTtlSeconds?: number;
  /** Largest body, in bytes. Default 25 MiB (GitHub caps a payload at 25 MB). */
  bodyLimit?: number;
  /**
   * Most bytes of webhook bodies held in memory at once, over all deliveries: one that would pass
   * it is refused with 503 (GitHub lets the App redeliver it). Default 100 MiB.
   */
  memoryLimitBytes?: number;
  /**
   * Longest a body may take to arrive, in ms: GitHub gives up on a delivery after 10 s, so a
   * slower body is not GitHub's, and must not hold its share of `memoryLimitBytes`. Default 10 s.
   */
  bodyTimeoutMs?: number;
}

const DELIVERY_ID = /^[A-Za-z0-9-]{1,100}$/;
/** What GitHub sends: `sha256=` and 64 hex digits. Anything else is refused before the body is read. */
const SIGNATURE = /^sha256=[0-9a-f]{64}$/;

/** A webhook body as the route's parser leaves it: the bytes, and their HMAC under each secret, computed as they arrived. */
interface ReceivedBody {
  raw: Buffer;
  digests: Buffer[];
}

class PayloadTooLargeError extends ArchwayError {
  constructor(limit: number) {
    super('BODY_TOO_LARGE', `the payload is larger than ${limit} bytes (GitHub caps payloads at 25 MB)`, {
      httpStatus: 413,
    });
  }
}

class BodyTimeoutError extends ArchwayError {
  constructor(ms: number) {
    super('BODY_TIMEOUT', `the payload did not arrive within ${ms} ms (GitHub waits 10 s for an answer)`, {
      httpStatus: 408,
    });
  }
}

class WebhookBusyError extends ArchwayError {
  constructor() {
    super('WEBHOOK_BUSY', 'too many webhook bodies are being received at once; redeliver it in a moment', {
      httpStatus: 503,
      infra: true,
    });
  }
}

/**
 * `POST /webhooks/github`: verifies `X-Hub-Signature-256` on the raw body against each secret,
 * answers 204 to events archway does not act on, drops a redelivery (same `X-GitHub-Delivery`),
 * and queues the rest for the GitHub worker: 202 without any call to GitHub.
 *
 * Nobody is authenticated before the signature is checked, so the body is never buffered on
 * trust: a request without a well-formed signature, or announcing more than the limit, is
 * refused before its body is read; the HMAC is computed while the body streams in, which stops
 * at the limit; and all bodies held at once stay under `memoryLimitBytes`.
 */
export function createWebhookRoutes(o: WebhookRoutesOptions): FastifyPluginAsync {
  const secrets = o.secrets.map((s) => Buffer.from(s));
  const ttl = o.dedupTtlSeconds ?? 7 * 86_400;
  const bodyLimit = o.bodyLimit ?? 25 * 1024 * 1024;
  const memoryLimit = o.memoryLimitBytes ?? 100 * 1024 * 1024;
  const bodyTimeoutMs = o.bodyTimeoutMs ?? 10_000;
  /** Bytes of webhook bodies held now, and what each request holds of them. */
  let held = 0;
  const holds = new WeakMap<FastifyRequest, number>();
  const release = (req: FastifyRequest) => {
    held -= holds.get(req) ?? 0;
    holds.delete(req);
  };
  return async (app) => {
    app.addHook('onRequest', async (req) => {
      const signature = req.headers['x-hub-signature-256'];
      if (typeof signature !== 'string' || signature === '') {
        throw new SignatureInvalidError(
          'X-Hub-Signature-256 is missing: configure the App with a webhook secret',
        );
      }
      if (!SIGNATURE.test(signature))
        throw new SignatureInvalidError('X-Hub-Signature-256 is not sha256= and 64 hex digits');
      if (Number(req.headers['content-length'] ?? 0) > bodyLimit) throw new PayloadTooLargeError(bodyLimit);
    });
    app.addHook('onResponse', async (req) => release(req));
    app.addHook('onRequestAbort', async (req) => release(req));

    // The signature is over the bytes GitHub sent: keep them, whatever the content type says,
    // and compute each secret's HMAC as they arrive.
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', (req, payload, done) => {
      const hmacs = secrets.map((s) => createHmac('sha256', s));
      const chunks: Buffer[] = [];
      let size = 0;
      let finished = false;
      const timer = setTimeout(() => fail(new BodyTimeoutError(bodyTimeoutMs)), bodyTimeoutMs);
      const fail = (e: Error) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        payload.removeAllListeners('data');
        payload.resume(); // the rest is read and dropped, never held
        chunks.length = 0;
        release(req);
        done(e, undefined);
      };
      payload.on('data', (chunk: Buffer) => {
        if (finished) return;
        size += chunk.length;
        if (size > bodyLimit) return fail(new PayloadTooLargeError(bodyLimit));
        if (held + chunk.length > memoryLimit) return fail(new WebhookBusyError());
        held += chunk.length;
        holds.set(req, (holds.get(req) ?? 0) + chunk.length);
        for (const h of hmacs) h.update(chunk);
        chunks.push(chunk);
      });
      payload.on('error', (e) => fail(e));
      payload.on('end', () => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        const body: ReceivedBody = {
          raw: Buffer.concat(chunks, size),
          digests: hmacs.map((h) => h.digest()),
        };
        done(null, body);
      });
    });

    app.post(
      '/webhooks/github',
      {
        bodyLimit,
        schema: {
          summary: 'GitHub App webhook',
          description:
            'Verified with X-Hub-Signature-256 (401 otherwise). 202: queued; 200: a redelivery, nothing new; 204: an event archway does not act on. See docs/github.md.',
          tags: ['github'],
        },
      },
      async (req, reply) => {
        // An empty body never reaches the parser.
        const body = (req.body as ReceivedBody | undefined) ?? {
          raw: Buffer.alloc(0),
          digests: secrets.map((s) => createHmac('sha256', s).digest()),
        };
        // The onRequest hook checked its form: sha256= and 64 hex digits.
        const given = Buffer.from(String(req.headers['x-hub-signature-256']).slice('sha256='.length), 'hex');
        if (!body.digests.some((d) => timingSafeEqual(d, given)))
          throw new SignatureInvalidError('X-Hub-Signature-256 does not match the webhook secret');
        const text = body.raw.toString('utf8');

        const event = req.headers['x-github-event'];
        const id = req.headers['x-github-delivery'];
        if (typeof event !== 'string' || !/^[a-z_]{1,64}$/.test(event))
          throw new InvalidInputError('X-GitHub-Event', 'missing or not an event name');
        if (typeof id !== 'string' || !DELIVERY_ID.test(id))
          throw new InvalidInputError('X-GitHub-Delivery', 'missing or not a delivery id');
        const payload = payloadText(text, req.headers['content-type']);
        let action: string | undefined;
        try {
          const parsed = JSON.parse(payload) as { action?: unknown };
          action = typeof parsed.action === 'string' ? parsed.action : undefined;
        } catch {
          throw new InvalidInputError('body', 'not valid JSON');
        }
        if (!isHandled(event, action)) return reply.code(204).send();

        const first = await o.redis.set(o.keys.githubDelivery(id), '1', 'EX', ttl, 'NX');
        if (first === null) return reply.code(200).send({ delivery: id, duplicate: true });
        try {
          await o.enqueue({ id, event, payload });
        } catch (e) {
          // Not queued: forget the delivery, so GitHub's redelivery is taken.
          await o.redis.del(o.keys.githubDelivery(id)).catch(() => undefined);
          throw new ArchwayError(
            'WEBHOOK_QUEUE_UNAVAILABLE',
            `could not queue the delivery: ${toError(e).message}`,
            {
              httpStatus: 503,
              infra: true,
            },
          );
        }
        return reply.code(202).send({ delivery: id, event, ...(action ? { action } : {}) });
      },
    );
  };
}

/** The JSON text of a payload: the body itself, or its `payload` field when GitHub posts a form. */
function payloadText(body: string, contentType: string | undefined): string {
  if (contentType?.startsWith('application/x-www-form-urlencoded')) {
    return new URLSearchParams(body).get('payload') ?? '';
  }
  return body;
}
