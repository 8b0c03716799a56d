import { afterEach, describe, expect, it } from 'vitest';
import { createKeys, createRedis } from '../../src/core/index.ts';
import { startRedis, type TestRedis } from '../support/redis-server.ts';
import { startTestApi, type TestApi } from '../support/test-api.ts';

let api: TestApi | undefined;
let server: TestRedis | undefined;
afterEach(async () => {
  await api?.close();
  api?.redis.disconnect();
  await server?.stop();
  api = undefined;
  server = undefined;
});

// Issue #10 item 7: a submit during a Redis outage answered 500.
describe('the API while Redis is away', { timeout: 60_000 }, () => {
  it('answers a submit with 503 REDIS_UNAVAILABLE and Retry-After, then takes jobs again', async () => {
    server = await startRedis();
    // The API's own kind of connection: commands fail after a few retries instead of hanging.
    const client = createRedis({ url: server.url, name: 'outage-test' });
    client.on('error', () => undefined);
    api = await startTestApi({
      name: 'outage',
      redis: { url: server.url, client, keys: createKeys('outage') },
    });
    const submit = () =>
      api?.app.inject({
        method: 'POST',
        url: '/v1/jobs',
        headers: { authorization: `Bearer ${api.token}` },
        payload: { arch: 'amd64', image: 'busybox', script: 'true' },
      });
    expect((await submit())?.statusCode).toBe(201);

    const back = server.restart({ downMs: 4000 });
    await new Promise((r) => setTimeout(r, 300));
    const down = await submit();
    expect(down?.statusCode).toBe(503);
    expect(down?.headers['retry-after']).toBe('5');
    expect(down?.json()).toMatchObject({ error: { code: 'REDIS_UNAVAILABLE' } });
    await back;

    for (let i = 0; i < 50 && client.status !== 'ready'; i++) await new Promise((r) => setTimeout(r, 100));
    expect((await submit())?.statusCode).toBe(201);
  });
});
