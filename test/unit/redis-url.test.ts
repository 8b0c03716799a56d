import { describe, expect, it } from 'vitest';
import { ApiConfig, parseConfig, parseRedisUrl } from '../../src/core/index.ts';

describe('REDIS_URL', () => {
  it('a redis:// or rediss:// URL is one server, passed to ioredis as it is', () => {
    expect(parseRedisUrl('rediss://:pw@10.0.0.1:6380/0')).toEqual({
      kind: 'server',
      url: 'rediss://:pw@10.0.0.1:6380/0',
    });
  });
  it('redis+sentinel:// names the sentinels, the primary and the password', () => {
    expect(parseRedisUrl('redis+sentinel://:s3cr%40t@10.0.0.1:26379,[fd00::2]:26380/archway')).toEqual({
      kind: 'sentinel',
      sentinels: [
        { host: '10.0.0.1', port: 26379 },
        { host: 'fd00::2', port: 26380 },
      ],
      primary: 'archway',
      password: 's3cr@t',
      tls: false,
    });
    expect(parseRedisUrl('rediss+sentinel://s1:26379/main')).toMatchObject({ tls: true, primary: 'main' });
  });
  it('a malformed sentinel URL is refused, naming the form it should have', () => {
    expect(() => parseRedisUrl('redis+sentinel://10.0.0.1:26379')).toThrow(/primary-name/);
    expect(() => parseRedisUrl('redis+sentinel://10.0.0.1/main')).toThrow(/'10.0.0.1' is not host:port/);
    expect(() =>
      parseConfig(ApiConfig, { ARCHWAY_TOKEN: 'x'.repeat(20), REDIS_URL: 'redis+sentinel://h:1,h2/main' }),
    ).toThrow(/REDIS_URL.*'h2' is not host:port/s);
    expect(() => parseConfig(ApiConfig, { ARCHWAY_TOKEN: 'x'.repeat(20), REDIS_URL: 'http://h:1' })).toThrow(
      /REDIS_URL.*redis\+sentinel:\/\//s,
    );
  });
});

describe('REDIS_URL for a Redis Cluster', () => {
  it('redis+cluster:// names some of its primaries and the password', () => {
    expect(parseRedisUrl('rediss+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000')).toEqual({
      kind: 'cluster',
      nodes: [
        { host: '10.0.0.1', port: 7000 },
        { host: '10.0.0.2', port: 7000 },
      ],
      password: 'pw',
      tls: true,
    });
    expect(() => parseRedisUrl('redis+cluster://10.0.0.1')).toThrow(
      /cluster node address '10.0.0.1' is not host:port/,
    );
  });
});
