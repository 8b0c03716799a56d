import { redisServerArgs } from '../../src/core/index.ts';

/**
 * The arguments of every redis-server the tests start: archway's own (`redisServerArgs`, as
 * `up` starts it) with an fsync at each write, as production should run; `extra` for cluster or
 * replica settings (last, so that it wins).
 */
export function durableRedisArgs(port: number, dir: string, extra: readonly string[] = []): string[] {
  return redisServerArgs({ port, dir, appendfsync: 'always', extra: ['--protected-mode', 'no', ...extra] });
}
