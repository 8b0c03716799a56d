import { afterEach, describe, expect, it } from 'vitest';
import { startTestApi, type TestApi } from '../support/test-api.ts';

let api: TestApi | undefined;
afterEach(async () => {
  await api?.close();
  api = undefined;
});

const node = (id: string) => ({
  id,
  arch: 'amd64' as const,
  hostArch: 'amd64',
  emulated: false,
  slots: 1,
  busy: 0,
  state: 'active' as const,
  version: 'test',
  startedAt: new Date().toISOString(),
});

// Issue #10 item 8: nodes that were killed stayed LOST in `archway nodes` for ever.
describe('lost nodes leave the list after the retention time', () => {
  it('out of GET /v1/nodes, still in ?all=true, counted by a metric, deleted after a day', async () => {
    api = await startTestApi({ name: 'lostnodes', env: { ARCHWAY_LOST_NODE_RETENTION_SECONDS: '60' } });
    const t = api;
    const [s] = await t.redis.time();
    const redisNow = Number(s) * 1000;
    for (const [id, silentMs] of [
      ['fresh', 0],
      ['lost-recently', 30_000],
      ['lost-long-ago', 3_600_000],
      ['lost-two-days', 2 * 86_400_000],
    ] as const) {
      await t.nodes.register(node(id));
      await t.redis.hset(t.keys.node(id), 'lastSeen', String(redisNow - silentMs));
    }
    const list = async (q = '') =>
      (
        (
          await t.app.inject({ url: `/v1/nodes${q}`, headers: { authorization: `Bearer ${t.token}` } })
        ).json() as { nodes: { id: string; lost: boolean }[] }
      ).nodes
        .map((n) => `${n.id}${n.lost ? ' (lost)' : ''}`)
        .sort();
    expect(await list()).toEqual(['fresh', 'lost-recently (lost)']);
    expect(await list('?all=true')).toEqual([
      'fresh',
      'lost-long-ago (lost)',
      'lost-recently (lost)',
      'lost-two-days (lost)',
    ]);
    const metrics = (await t.app.inject({ url: '/metrics' })).body;
    expect(metrics).toMatch(/^archway_nodes_lost_unlisted\{arch="amd64"\} 2$/m);

    expect(await t.nodes.forgetLost(86_400_000)).toEqual(['lost-two-days']);
    expect(await list('?all=true')).toEqual(['fresh', 'lost-long-ago (lost)', 'lost-recently (lost)']);
  });
});
