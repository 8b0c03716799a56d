import { Webhooks } from '@octokit/webhooks';
import type { FastifyPluginAsync } from 'fastify';
import type { Redis } from 'ioredis';
import { ArchwayError, InvalidInputError, type Keys, toError } from '../../src/index.ts';
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
  /** Largest body, in bytes. Default 25 MiB (GitHub's cap on a payload). */
  bodyLimit?: number;
}

const DELIVERY_ID = /^[A-Za-z0-9-]{1,100}$/;

/**
 * `POST /webhooks/github`: verifies `X-Hub-Signature-256` on the raw body against each secret,
 * answers 204 to events archway does not act on, drops a redelivery (same `X-GitHub-Delivery`),
 * and queues the rest for the GitHub worker: 202 without any call to GitHub.
 */
export function createWebhookRoutes(o: WebhookRoutesOptions): FastifyPluginAsync {
  const verifiers = o.secrets.map((secret) => new Webhooks({ secret }));
  const ttl = o.dedupTtlSeconds ?? 7 * 86_400;
  return async (app) => {
    // The signature is over the bytes GitHub sent: keep them, whatever the content type says.
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

    app.post(
      '/webhooks/github',
      {
        bodyLimit: o.bodyLimit ?? 25 * 1024 * 1024,
        schema: {
          summary: 'GitHub App webhook',
          description:
            'Verified with X-Hub-Signature-256 (401 otherwise). 202: queued; 200: a redelivery, nothing new; 204: an event archway does not act on. See docs/github.md.',
          tags: ['github'],
        },
      },
      async (req, reply) => {
        const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
        const text = raw.toString('utf8');
        const signature = req.headers['x-hub-signature-256'];
        if (typeof signature !== 'string' || signature === '') {
          throw new SignatureInvalidError(
            'X-Hub-Signature-256 is missing: configure the App with a webhook secret',
          );
        }
        let valid = false;
        for (const v of verifiers) {
          if (await v.verify(text, signature).catch(() => false)) {
            valid = true;
            break;
          }
        }
        if (!valid) throw new SignatureInvalidError('X-Hub-Signature-256 does not match the webhook secret');

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
