/**
 * The arguments of a redis-server that archway starts itself (`archway up`'s, and every test's):
 * on the loopback, durable (AOF), never evicting (the API refuses a Redis that may evict), no RDB
 * snapshots. `appendfsync` is what it loses on a crash: `everysec` up to a second of writes (what
 * `up` runs, and the fleet set-up in docs/operations.md), `always` nothing (the tests). `extra`
 * comes last, so that a caller's setting wins.
 */
export function redisServerArgs(o: {
  port: number;
  dir: string;
  appendfsync: 'always' | 'everysec';
  extra?: readonly string[];
}): string[] {
  return [
    '--port',
    String(o.port),
    '--bind',
    '127.0.0.1',
    '--dir',
    o.dir,
    '--appendonly',
    'yes',
    '--appendfsync',
    o.appendfsync,
    '--maxmemory-policy',
    'noeviction',
    '--save',
    '',
    ...(o.extra ?? []),
  ];
}
