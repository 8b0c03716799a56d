import { join } from 'node:path';

/**
 * Where things live in a host's btrfs pool: the one module that spells its directories.
 *
 * - `images/<name>/<arch>/<digest>`: read-only image versions (and their shifted copies per uid
 *   range beside them, `<digest>.ranges/<k>`)
 * - `warm/<id>`, `jobs/<id>`: the writable snapshot of a warm container, of a cold one
 * - `bundles/<id>`: each container's OCI bundle and its record
 * - `cache/`: the image builder's packages, the git mirrors (`cache/git`), the package cache of
 *   egress jobs (`cache/apt-cacher-ng`, unless ARCHWAY_APT_CACHE_DIR moves it)
 * - `redis/`, `page-secret`: the data of the Redis that `archway up` starts when it finds none,
 *   and the secret `up` signs page links with
 */
export interface PoolLayout {
  readonly root: string;
  readonly images: string;
  readonly warm: string;
  readonly jobs: string;
  readonly bundles: string;
  readonly cache: string;
  /** Bare git mirrors, one per repository: `<gitMirrors>/<host>/<path>.git`. */
  readonly gitMirrors: string;
  /** The directory of one git host's mirrors (a port's `:` becomes `_`). */
  gitMirrorsOf(host: string): string;
  /** The default directory of the host's package cache (apt-cacher-ng). */
  readonly aptCache: string;
  /** Where `archway up` keeps the data (AOF) of the Redis it starts itself. */
  readonly upRedis: string;
  /** The secret `archway up` signs its page links with (mode 0600), kept so links outlive a restart. */
  readonly upPageSecret: string;
  /** The directories made when the pool is (`ensurePool`). */
  readonly dirs: readonly string[];
  /** The directories that hold containers' snapshots (warm, jobs). */
  readonly snapshotDirs: readonly string[];
}

export function poolLayout(poolPath: string): PoolLayout {
  const images = join(poolPath, 'images');
  const warm = join(poolPath, 'warm');
  const jobs = join(poolPath, 'jobs');
  const bundles = join(poolPath, 'bundles');
  const cache = join(poolPath, 'cache');
  return {
    root: poolPath,
    images,
    warm,
    jobs,
    bundles,
    cache,
    gitMirrors: join(cache, 'git'),
    gitMirrorsOf: (host) => join(cache, 'git', host.replace(/:/g, '_')),
    aptCache: join(cache, 'apt-cacher-ng'),
    upRedis: join(poolPath, 'redis'),
    upPageSecret: join(poolPath, 'page-secret'),
    dirs: [images, warm, jobs, bundles, cache],
    snapshotDirs: [warm, jobs],
  };
}
