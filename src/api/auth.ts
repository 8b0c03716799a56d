import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { type ApiToken, ForbiddenError, UnauthorizedError } from '../core/index.ts';

export type Scope = ApiToken['scopes'][number];

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The scope a route needs (routes under /v1 only). Default 'read'. */
    scope?: Scope;
  }
  interface FastifyRequest {
    /** Name of the token that authenticated the request ('' before authentication). */
    clientId: string;
    /** The token that authenticated the request has the admin scope. */
    clientAdmin: boolean;
  }
}

export interface TokenVerifier {
  /** The token whose secret is `presented`, or undefined. Takes the same time whichever token (if any) matches. */
  verify(presented: string): ApiToken | undefined;
}

const sha256 = (s: string) => createHash('sha256').update(s).digest();

/**
 * Compares in constant time: both sides are hashed to 32 bytes (so their lengths never differ,
 * which timingSafeEqual needs and which would itself leak), and every token is compared, with no
 * early exit on a match.
 */
export function createTokenVerifier(tokens: readonly ApiToken[]): TokenVerifier {
  const hashed = tokens.map((t) => ({ token: t, hash: sha256(t.secret) }));
  return {
    verify(presented) {
      const h = sha256(presented);
      let found: ApiToken | undefined;
      for (const t of hashed) {
        if (timingSafeEqual(h, t.hash) && !found) found = t.token;
      }
      return found;
    },
  };
}

/** admin implies every scope. */
export function hasScope(token: ApiToken, scope: Scope): boolean {
  return token.scopes.includes('admin') || token.scopes.includes(scope);
}

/** The onRequest hook of the /v1 routes: runs before the body is read, so a refused request costs nothing. */
export function createAuthHook(verifier: TokenVerifier) {
  return async function authenticate(req: FastifyRequest, _reply: FastifyReply): Promise<void> {
    const header = req.headers.authorization;
    if (!header) throw new UnauthorizedError('missing token: send Authorization: Bearer <token>');
    const match = /^Bearer +(\S+) *$/i.exec(header);
    const token = match?.[1] ? verifier.verify(match[1]) : undefined;
    if (!token) throw new UnauthorizedError('invalid token');
    const scope = req.routeOptions.config.scope ?? 'read';
    if (!hasScope(token, scope)) {
      throw new ForbiddenError(`token '${token.name}' lacks the '${scope}' scope this request needs`);
    }
    req.clientId = token.name;
    req.clientAdmin = token.scopes.includes('admin');
  };
}
