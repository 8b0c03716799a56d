import { z } from 'zod';
import { ArchwayError, parseConfig, toError } from '../core/light.ts';

/** What the API clients (submit, logs, jobs, nodes, pools, ...) read from the environment. */
export const ClientConfig = z.object({
  /** Where the API is. Default: http://127.0.0.1:$ARCHWAY_PORT, else http://127.0.0.1:8080. */
  ARCHWAY_URL: z
    .string()
    .regex(/^https?:\/\/[^\s]+$/, 'an http:// or https:// URL')
    .optional(),
  /** The port `archway api` and `up` listen on; the default of ARCHWAY_URL when that is unset. */
  ARCHWAY_PORT: z.coerce.number().int().min(1).max(65_535).optional(),
  /** The bearer token sent to the API. No default: a secret. */
  ARCHWAY_TOKEN: z.string().optional(),
});
export type ClientConfig = z.infer<typeof ClientConfig>;

/** The environment variables every client command reads, for `--help`. */
export const CLIENT_ENV_HELP = `
Environment:
  ARCHWAY_URL    the API (default http://127.0.0.1:$ARCHWAY_PORT, else http://127.0.0.1:8080)
  ARCHWAY_PORT   the API's port on this host, when ARCHWAY_URL is unset
  ARCHWAY_TOKEN  the bearer token (\`archway up\` prints one)`;

/** The API's base URL from the client config (the default follows ARCHWAY_PORT, issue #13). */
export function apiUrl(config: ClientConfig): string {
  const url = config.ARCHWAY_URL ?? `http://127.0.0.1:${config.ARCHWAY_PORT ?? 8080}`;
  return url.replace(/\/+$/, '');
}

/** A request to the API failed or it answered with an error. */
function apiError(status: number, body: string, url: string, hasToken: boolean): ArchwayError {
  let code = `HTTP_${status}`;
  let message = body.trim() || `the API answered ${status}`;
  try {
    const parsed = JSON.parse(body) as { error?: { code?: string; message?: string } };
    if (parsed.error?.message) {
      message = parsed.error.message;
      code = parsed.error.code ?? code;
    }
  } catch {
    // Not JSON (a proxy's page): its text is the message.
  }
  // Which API said no matters: another installation on this host answers the same port (issue #13).
  if (status === 401) {
    message += ` (from the API at ${url}; ${hasToken ? 'is ARCHWAY_TOKEN one of its tokens?' : 'set ARCHWAY_TOKEN: `archway up` prints one'})`;
  }
  return new ArchwayError(code, message, { httpStatus: status });
}

export interface ApiClient {
  readonly url: string;
  /** Any answer but a 2xx is thrown as an ArchwayError carrying the API's code, message and status. */
  request(
    method: string,
    path: string,
    o?: { body?: unknown; headers?: Record<string, string>; timeoutMs?: number },
  ): Promise<Response>;
  json<T>(method: string, path: string, o?: { body?: unknown; headers?: Record<string, string> }): Promise<T>;
}

export function createApiClient(config: ClientConfig): ApiClient {
  const base = apiUrl(config);
  const client: ApiClient = {
    url: base,
    async request(method, path, o = {}) {
      const headers: Record<string, string> = { ...o.headers };
      if (config.ARCHWAY_TOKEN) headers.authorization = `Bearer ${config.ARCHWAY_TOKEN}`;
      if (o.body !== undefined) headers['content-type'] = 'application/json';
      let res: Response;
      try {
        res = await fetch(`${base}${path}`, {
          method,
          headers,
          ...(o.body === undefined ? {} : { body: JSON.stringify(o.body) }),
          ...(o.timeoutMs ? { signal: AbortSignal.timeout(o.timeoutMs) } : {}),
        });
      } catch (e) {
        const err = toError(e);
        const cause = err.cause instanceof Error ? err.cause : undefined;
        const why = (cause && 'code' in cause && String(cause.code)) || cause?.message || err.message;
        throw new ArchwayError(
          'API_UNREACHABLE',
          `cannot reach the API at ${base}: ${why} (is \`archway api\` or \`archway up\` running? ARCHWAY_URL says where it is)`,
          { httpStatus: 503, cause: e },
        );
      }
      if (!res.ok) throw apiError(res.status, await res.text().catch(() => ''), base, !!config.ARCHWAY_TOKEN);
      return res;
    },
    async json<T>(method: string, path: string, o = {}) {
      const res = await client.request(method, path, { ...o, timeoutMs: 30_000 });
      return (await res.json()) as T;
    },
  };
  return client;
}

/** The client of the API that `env` names. */
export function apiClientFrom(env: Record<string, string | undefined>): ApiClient {
  return createApiClient(parseConfig(ClientConfig, env));
}
