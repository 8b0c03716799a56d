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
