import { createHash } from 'node:crypto';

const DEFAULT_POOL = '/var/lib/archway';

/**
 * Settings whose default follows the pool, so that two installations on one host, each with its
 * own ARCHWAY_POOL_PATH, never share a runtime state directory or a cgroup parent (where one
 * worker's start-up reaper would destroy the other's containers: issue #10). With the default
 * pool they are /run/archway and archway; with /var/lib/archway-NAME, /run/archway-NAME and
 * archway-NAME; with any other path, archway-<first 10 hex of the path's sha256>. A value set
 * in the environment always wins. Uid leases stay host-wide on purpose (kernel uids are).
 */
export function withDerivedDefaults(
  env: Record<string, string | undefined>,
): Record<string, string | undefined> {
  const pool = env.ARCHWAY_POOL_PATH?.replace(/\/+$/, '');
  if (!pool || pool === DEFAULT_POOL || !pool.startsWith('/')) return env;
  const base = pool.slice('/var/lib/'.length);
  const name =
    pool.startsWith('/var/lib/archway') && /^archway[a-z0-9_.-]*$/.test(base)
      ? base
      : `archway-${createHash('sha256').update(pool).digest('hex').slice(0, 10)}`;
  return {
    ...env,
    ARCHWAY_RUN_DIR: env.ARCHWAY_RUN_DIR || `/run/${name}`,
    ARCHWAY_CGROUP_PARENT: env.ARCHWAY_CGROUP_PARENT || name,
  };
}
