import { createImageStore, type ImageStore } from '../../images/index.ts';
import {
  createJobLauncher,
  createRuncRuntime,
  type JobLauncher,
  runtimeOptionsFrom,
} from '../../workers/index.ts';
import type { Arch } from '../core/index.ts';
import {
  ceilingsSet,
  createLogger,
  ensurePool,
  HostConfig,
  hostCeilings,
  type Logger,
  parseConfig,
  poolLayout,
} from '../core/index.ts';

/** The environment variables the host commands (run, images, up, worker) read, for `--help`. */
export const HOST_ENV_HELP = `
Environment (docs/configuration.md lists every variable):
  ARCHWAY_POOL_PATH     the btrfs pool (default /var/lib/archway)
  ARCHWAY_POOL_SIZE_GIB size of the loop-backed pool made when the path is not btrfs
  ARCHWAY_LOG_LEVEL     debug, info (default), warn or error`;

/** What every host command (run, images, up) needs: config, logger, the pool mounted, the image store. */
export interface HostContext {
  config: HostConfig;
  logger: Logger;
  store: ImageStore;
  cacheDir: string;
}

export async function createHostContext(
  env: Record<string, string | undefined>,
  name: string,
): Promise<HostContext> {
  const config = parseConfig(HostConfig, env);
  const logger = createLogger({ name, level: config.ARCHWAY_LOG_LEVEL, format: config.ARCHWAY_LOG_FORMAT });
  await ensurePool({ path: config.ARCHWAY_POOL_PATH, loopSizeGiB: config.ARCHWAY_POOL_SIZE_GIB, logger });
  const store = createImageStore({ poolPath: config.ARCHWAY_POOL_PATH });
  return { config, logger, store, cacheDir: poolLayout(config.ARCHWAY_POOL_PATH).cache };
}

/** A launcher for `arch` on this host, after removing whatever processes that are gone left behind. */
export async function createHostLauncher(ctx: HostContext, arch: Arch): Promise<JobLauncher> {
  const c = ctx.config;
  const runtime = await createRuncRuntime(runtimeOptionsFrom(c, arch, ctx.logger));
  await runtime.reap({});
  const ceilings = hostCeilings({
    poolPath: c.ARCHWAY_POOL_PATH,
    poolSizeGiB: c.ARCHWAY_POOL_SIZE_GIB,
    set: ceilingsSet(c),
  });
  return createJobLauncher({ runtime, images: ctx.store, logger: ctx.logger, ceilings });
}
