/**
 * The arguments of every redis-server the tests start: on loopback, durable as production
 * should be (AOF, fsync at each write), never evicting; `extra` for cluster or replica settings.
 */
export function durableRedisArgs(port: number, dir: string, extra: readonly string[] = []): string[] {
  return [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--appendonly',
    'yes',
    '--appendfsync',
    'always',
    '--maxmemory-policy',
    'noeviction',
    '--save',
    '',
    '--protected-mode',
    'no',
    // Last, so that a caller's setting wins over the ones above.
    ...extra,
  ];
}
