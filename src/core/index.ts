/** The shared core: domain words and schemas, config, errors, logger, and host primitives. */
export * from './config.ts';
export * from './domain.ts';
export * from './errors/index.ts';
export * from './host/binfmt.ts';
export * from './host/btrfs.ts';
export * from './host/ceilings.ts';
export * from './host/cgroups.ts';
export * from './host/host-leases.ts';
export * from './host/pool-mount.ts';
export * from './host/run-command.ts';
export * from './job.ts';
export * from './lifecycle.ts';
export * from './logger.ts';
export * from './metrics.ts';
export * from './redis/connection.ts';
export * from './redis/keys.ts';
export * from './source-url.ts';
