import { z } from 'zod';
import { InvalidInputError } from './errors/invalid-input-error.ts';

const int = (def: number, min = 1) => z.coerce.number().int().min(min).default(def);

/**
 * What a host process (the worker, `archway run`, `archway images`) reads from the environment.
 * Every variable is listed with its default in docs/configuration.md.
 */
export const HostConfig = z.object({
  /** Where the btrfs pool lives (images, warm and job snapshots, bundles, caches). */
  ARCHWAY_POOL_PATH: z.string().startsWith('/', 'an absolute path').default('/var/lib/archway'),
  /** Size of the sparse loop-backed btrfs file made when the pool path is not on btrfs, in GiB. */
  ARCHWAY_POOL_SIZE_GIB: int(64),
  /** First host uid/gid that container root maps to. */
  ARCHWAY_UID_BASE: int(100000),
  /** How many uids/gids each container gets, from the base. */
  ARCHWAY_UID_SIZE: int(65536, 1024),
  /** OCI runtime: runc, crun, or auto (crun where the host's cgroups are unified v2, else runc). */
  ARCHWAY_OCI_RUNTIME: z.enum(['auto', 'runc', 'crun']).default('auto'),
  /** Directory for the OCI runtime's state (a tmpfs, so a reboot forgets containers). */
  ARCHWAY_RUN_DIR: z.string().startsWith('/', 'an absolute path').default('/run/archway'),
  /** cgroup (under each hierarchy's root) that every container's cgroup is made in. */
  ARCHWAY_CGROUP_PARENT: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_.-]*$/, 'a cgroup name such as archway')
    .default('archway'),
  /** Static init (from the host) that warm containers idle in. */
  ARCHWAY_INIT: z.string().startsWith('/', 'an absolute path').default('/usr/bin/catatonit'),
  /** Debian mirror for image builds. */
  ARCHWAY_DEBIAN_MIRROR: z.url().default('http://deb.debian.org/debian'),
  /** pino log level. */
  ARCHWAY_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});
export type HostConfig = z.infer<typeof HostConfig>;

/** Parses `env` with `schema`; a bad value throws an error naming the variable and what it expects. */
export function parseConfig<S extends z.ZodType>(
  schema: S,
  env: Record<string, string | undefined>,
): z.infer<S> {
  // Empty strings count as unset, as shells and systemd units often leave them.
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const result = schema.safeParse(cleaned);
  if (!result.success) {
    const issue = result.error.issues[0];
    const name = String(issue?.path[0] ?? 'environment');
    throw new InvalidInputError(
      name,
      `invalid value ${JSON.stringify(cleaned[name] ?? '')}: ${issue?.message ?? 'invalid'}`,
    );
  }
  return result.data;
}

const RedisSettings = {
  /** Redis to use. */
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, 'a redis:// or rediss:// URL')
    .default('redis://127.0.0.1:6379'),
  /** Prefix of every key (and the hash tag of the shared ones). */
  ARCHWAY_REDIS_PREFIX: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_-]*$/, 'lower-case letters, digits, _ and -')
    .default('archway'),
  /** Days a finished job's log is kept. */
  ARCHWAY_LOG_RETENTION_DAYS: z.coerce.number().positive().default(7),
};

/** One API token: `name:scope+scope:secret`, scopes read, submit, admin (admin implies the others). */
export const ApiToken = z.object({
  name: z.string(),
  scopes: z.array(z.enum(['read', 'submit', 'admin'])),
  secret: z.string(),
});
export type ApiToken = z.infer<typeof ApiToken>;

function parseTokens(value: string, ctx: z.RefinementCtx): ApiToken[] {
  const out: ApiToken[] = [];
  for (const item of value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const [name, scopes, ...rest] = item.split(':');
    const secret = rest.join(':');
    const parsed = ApiToken.safeParse({ name, scopes: scopes?.split('+'), secret });
    if (!parsed.success || secret.length < 16) {
      ctx.addIssue({
        code: 'custom',
        message: `each token is name:scope+scope:secret (scopes read, submit, admin; secret of 16+ characters); '${name ?? ''}' is not`,
      });
      return z.NEVER;
    }
    out.push(parsed.data);
  }
  return out;
}

/** The API process. */
export const ApiConfig = z
  .object({
    ...RedisSettings,
    /** Port the API listens on. */
    ARCHWAY_PORT: z.coerce.number().int().min(0).max(65535).default(8080),
    /** Address the API binds. */
    ARCHWAY_HOST: z.string().default('127.0.0.1'),
    /** Tokens: `name:scope+scope:secret,...`. No default: a secret. */
    ARCHWAY_TOKENS: z.string().default('').transform(parseTokens),
    /** A single admin token (what `archway up` prints and the CLI sends). No default: a secret. */
    ARCHWAY_TOKEN: z.string().min(16, 'at least 16 characters').optional(),
    /** Largest request body, in bytes. */
    ARCHWAY_BODY_LIMIT_BYTES: z.coerce
      .number()
      .int()
      .positive()
      .default(2 * 1024 * 1024),
    /** The API's address as users reach it (links to job logs). Default http://HOST:PORT. */
    ARCHWAY_PUBLIC_URL: z.url().optional(),
    ARCHWAY_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .transform((c, ctx) => {
    const tokens = [
      ...c.ARCHWAY_TOKENS,
      ...(c.ARCHWAY_TOKEN ? [{ name: 'admin', scopes: ['admin' as const], secret: c.ARCHWAY_TOKEN }] : []),
    ];
    if (tokens.length === 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['ARCHWAY_TOKEN'],
        message: 'no API token configured: set ARCHWAY_TOKEN or ARCHWAY_TOKENS',
      });
      return z.NEVER;
    }
    return { ...c, tokens };
  });
export type ApiConfig = z.output<typeof ApiConfig>;

/** The worker process (besides its command-line flags --arch, --slots, --warm). */
export const WorkerConfig = HostConfig.extend({
  ...RedisSettings,
  /** This node's id. Default: `<hostname>-<arch>-<pid>`. */
  ARCHWAY_NODE_ID: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'letters, digits, _, . and -')
    .optional(),
  /** Bytes of output a job's log keeps, in MiB. */
  ARCHWAY_LOG_LIMIT_MIB: z.coerce.number().positive().default(4),
  /** Port of the worker's /metrics (0 = none). */
  ARCHWAY_WORKER_METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(0),
});
export type WorkerConfig = z.infer<typeof WorkerConfig>;
