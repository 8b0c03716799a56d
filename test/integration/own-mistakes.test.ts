import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CatalogEntry, createImageCatalog } from '../../queue/index.ts';
import type { Arch } from '../../src/core/index.ts';
import { startCluster, type TestCluster } from '../support/cluster.ts';
import { type FakeGitHub, startFakeGitHub } from '../support/fake-github.ts';
import { checkLeftovers } from '../support/leak-check.ts';
import { keyCount } from '../support/redis-server.ts';
import { startTestApi, type TestApi } from '../support/test-api.ts';
import { testNode } from '../support/test-node.ts';

// Issue 10, item 2: a job's own mistakes are refused at submission where they can be, else fail
// the job with a reason; they never count toward quarantine.

function entry(name: string, arch: Arch): CatalogEntry {
  const digest = `sha256:${randomBytes(32).toString('hex')}`;
  const now = new Date().toISOString();
  return {
    name,
    arch,
    digest,
    parent: null,
    sizeBytes: 1,
    description: '',
    createdAt: now,
    publishedAt: now,
    full: { digest, sizeBytes: 1 },
    incremental: null,
  };
}

describe('at submission', () => {
  let api: TestApi;
  let pinned: string;

  beforeAll(async () => {
    api = await startTestApi({ name: 'own' });
    // arm64: busybox in the catalog; debian-bookworm held by its one live node only (built there, not published).
    const busybox = entry('busybox', 'arm64');
    pinned = `busybox@${busybox.digest}`;
    await createImageCatalog(api.redis, api.keys).publish(busybox);
    await api.nodes.register(testNode('node-arm64', 'arm64', { slots: 1 }));
    await api.nodes.setImages('node-arm64', [
      { name: 'debian-bookworm', arch: 'arm64', digest: `sha256:${'b'.repeat(64)}`, current: true },
    ]);
  });
  afterAll(() => api?.close());

  const submit = (over: Record<string, unknown>) =>
    api.app.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: { authorization: `Bearer ${api.token}` },
      payload: { arch: 'arm64', image: 'busybox', script: 'true', ...over },
    });

  it("the CLI's submit says so over real HTTP, and exits 2 (the user's error)", async () => {
    const served = await startTestApi({
      name: 'owncli',
      listen: true,
      redis: { url: api.redisUrl, client: api.redis, keys: api.keys },
      env: { ARCHWAY_TOKEN: api.token },
    });
    try {
      const r = await execa(
        'bin/archway',
        ['submit', '--arch', 'aarch64', '--image', 'busybx', '--', 'true'],
        {
          env: {
            PATH: process.env.PATH ?? '/usr/bin:/bin',
            ARCHWAY_URL: served.url,
            ARCHWAY_TOKEN: api.token,
          },
          extendEnv: false,
          reject: false,
        },
      );
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toContain(
        "archway: no image 'busybx' for arm64: neither the catalog nor a live node of arm64 holds it; arm64 has: busybox",
      );
    } finally {
      await served.close();
    }
  });

  it('an image neither the catalog nor a live node of the arch holds: 404 naming it and listing those there are; nothing written', async () => {
    const before = await keyCount(api.redis);
    const res = await submit({ image: 'busybx' });
    expect(res.statusCode).toBe(404);
    expect(res.json().error.code).toBe('IMAGE_NOT_FOUND');
    expect(res.json().error.message).toBe(
      "no image 'busybx' for arm64: neither the catalog nor a live node of arm64 holds it; arm64 has: busybox, debian-bookworm",
    );
    // A version the catalog does not have is as unknown as a name.
    const version = await submit({ image: `busybox@sha256:${'0'.repeat(64)}` });
    expect(version.statusCode).toBe(404);
    expect(version.json().error.message).toContain(`no image 'busybox@sha256:${'0'.repeat(64)}' for arm64`);
    expect(await keyCount(api.redis)).toBe(before);
  });

  it('an older version still in the catalog but on no node is a 404: nodes sync only the current one', async () => {
    const catalog = createImageCatalog(api.redis, api.keys);
    const v1 = entry('alpine-ish', 'arm64');
    await catalog.publish(v1);
    await catalog.publish({ ...entry('alpine-ish', 'arm64'), parent: v1.digest });
    const old = await submit({ image: `alpine-ish@${v1.digest}` });
    expect(old.statusCode).toBe(404);
    expect(old.json().error.message).toContain(`no image 'alpine-ish@${v1.digest}' for arm64`);
    expect((await submit({ image: 'alpine-ish' })).statusCode).toBe(201);
  });

  it('an image in the catalog, or held by a live node of the arch, is accepted', async () => {
    expect((await submit({ image: 'busybox' })).statusCode).toBe(201);
    expect((await submit({ image: pinned })).statusCode).toBe(201);
    expect((await submit({ image: 'debian-bookworm' })).statusCode).toBe(201);
    // Another arch's images do not count: s390x has nothing, so its node decides at run time.
    expect((await submit({ arch: 's390x', image: 'busybx' })).statusCode).toBe(201);
  });

  it('an env or secret value with a NUL byte: 400 naming the variable; nothing written', async () => {
    const before = await keyCount(api.redis);
    const env = await submit({ env: { GOOD: 'x', BAD: 'a\u0000b' } });
    expect(env.statusCode).toBe(400);
    expect(env.json().error).toMatchObject({ code: 'INVALID_INPUT', field: 'env.BAD' });
    expect(env.json().error.message).toContain('NUL');
    const secret = await submit({ secrets: { TOKEN: '\u0000' } });
    expect(secret.statusCode).toBe(400);
    expect(secret.json().error.field).toBe('secrets.TOKEN');
    expect(await keyCount(api.redis)).toBe(before);
  });

  it.each([
    ['memoryMiB', 1, 'at least 32 MiB'],
    ['cpus', 0.00001, 'at least 0.01'],
  ])('limits the kernel cannot apply: %s %s is a 400 with the minimum', async (field, value, minimum) => {
    const res = await submit({ resources: { [field]: value } });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.field).toBe(`resources.${field}`);
    expect(res.json().error.message).toContain(minimum);
  });
});

describe('at run time, on a pool of one node', () => {
  let c: TestCluster | undefined;
  let gh: FakeGitHub | undefined;
  checkLeftovers(
    'each',
    async () => {
      await c?.close();
      c = undefined;
    },
    async () => {
      await gh?.close();
      gh = undefined;
    },
  );

  it('a node without image sync reports what it holds, so the API refuses an image it lacks by name', async () => {
    c = await startCluster();
    const cluster = c;
    await cluster.addWorker('arm64', { slots: 1, reportImages: true });
    const api = await startTestApi({
      name: 'own',
      redis: { url: cluster.redis.url, client: cluster.client, keys: cluster.keys },
    });
    try {
      const submit = (image: string) =>
        api.app.inject({
          method: 'POST',
          url: '/v1/jobs',
          headers: { authorization: `Bearer ${api.token}` },
          payload: { arch: 'arm64', image, script: 'echo reported' },
        });
      const typo = await submit('busybx');
      expect(typo.statusCode).toBe(404);
      expect(typo.json().error.message).toMatch(
        /^no image 'busybx' for arm64: .*arm64 has: (.+, )?busybox(,|$)/,
      );
      const ok = await submit('busybox');
      expect(ok.statusCode).toBe(201);
      expect(await cluster.waitFinal(ok.json().job.id)).toMatchObject({ state: 'passed' });
    } finally {
      await api.close();
    }
  });

  it('three jobs whose image is nowhere (removed after submission) fail bad_spec and do not quarantine the node; a good job runs', async () => {
    c = await startCluster();
    const node = await c.addWorker('arm64', { slots: 1 });
    for (let i = 0; i < 3; i++) {
      const id = await c.submit({ arch: 'arm64', image: 'busybx', script: 'echo should not run' });
      const job = await c.waitFinal(id);
      const log = await c.log(id);
      expect(job, log).toMatchObject({ state: 'failed', reason: 'bad_spec', attempt: 1 });
      expect(job.attempts).toHaveLength(1);
      expect(job.attempts[0]).toMatchObject({ outcome: 'failed', reason: 'bad_spec' });
      expect(log).toContain("[archway] the job cannot run: no image 'busybx' for arm64 on this host");
      expect(log).not.toContain('should not run');
    }
    expect(node.state).toBe('active');
    const ok = await c.submit({ arch: 'arm64', image: 'busybox', script: 'echo fine' });
    expect(await c.waitFinal(ok)).toMatchObject({ state: 'passed' });
  }, 90_000);

  it('three jobs whose script does not fit their own disk limit fail bad_spec and do not quarantine the node', async () => {
    c = await startCluster();
    const cluster = c;
    const node = await cluster.addWorker('amd64', { slots: 1 });
    for (let i = 0; i < 3; i++) {
      const id = await cluster.submit({
        arch: 'amd64',
        image: 'busybox',
        // 1 MB of comment: more than a 1 MiB qgroup takes once the file's metadata is counted.
        script: `# ${'x'.repeat(1_000_000)}\necho should not run`,
        resources: { diskMiB: 1 },
      });
      const job = await cluster.waitFinal(id);
      const log = await cluster.log(id);
      expect(job, log).toMatchObject({ state: 'failed', reason: 'bad_spec', attempt: 1 });
      expect(log).toContain(
        "[archway] the job cannot run: resources.diskMiB: the job's disk limit cannot hold its own script",
      );
    }
    expect(node.state).toBe('active');
    const ok = await cluster.submit({ arch: 'amd64', image: 'busybox', script: 'echo fine' });
    expect(await cluster.waitFinal(ok)).toMatchObject({ state: 'passed' });
  });

  it('three jobs for an image published a moment ago that the node has not synced yet: retried, and the node is not quarantined', async () => {
    c = await startCluster();
    const cluster = c;
    const node = await cluster.addWorker('arm64', { slots: 1 });
    // Published now: the node's sync may still be receiving it, which is no fault of the host.
    await createImageCatalog(cluster.client, cluster.keys).publish(entry('fresh-image', 'arm64'));
    const ids: string[] = [];
    for (let i = 0; i < 3; i++)
      ids.push(await cluster.submit({ arch: 'arm64', image: 'fresh-image', script: 'true' }));
    for (const id of ids) {
      const job = await cluster.waitFinal(id, 60_000);
      // Never synced here in the end: errored after every attempt, each one on its record.
      expect(job).toMatchObject({ state: 'errored', reason: 'infra', attempt: 3 });
      expect(job.attempts.every((a) => a.outcome === 'errored')).toBe(true);
    }
    expect(node.state).toBe('active');
    const ok = await cluster.submit({ arch: 'arm64', image: 'busybox', script: 'echo fine' });
    expect(await cluster.waitFinal(ok)).toMatchObject({ state: 'passed' });
  }, 120_000);

  it('three jobs whose git source does not exist, and one whose tree does not fit its disk, fail with reason source at once and do not quarantine the node; a good job runs', async () => {
    c = await startCluster();
    gh = await startFakeGitHub();
    const node = await c.addWorker('amd64', { slots: 1 });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++)
      ids.push(
        await c.submit({
          arch: 'amd64',
          image: 'busybox',
          script: 'echo should not run',
          source: { git: `${gh.url}/acme/no-such-repo-${i}.git` },
        }),
      );
    for (const id of ids) {
      const job = await c.waitFinal(id, 80_000);
      const log = await c.log(id);
      // The server says the repository does not exist: the job fails at once (no retry, unlike a
      // server that cannot be reached), as its own mistake.
      expect(job, log).toMatchObject({ state: 'failed', reason: 'source' });
      expect(job.attempts).toHaveLength(1);
      expect(job.attempts.at(-1)).toMatchObject({ outcome: 'failed', reason: 'source' });
      expect(log).toMatch(/\[archway\] the job cannot run: fetching HEAD from .*no-such-repo/);
      expect(log).not.toContain('should not run');
    }
    expect(node.state).toBe('active');
    const ok = await c.submit({ arch: 'amd64', image: 'busybox', script: 'echo fine' });
    expect(await c.waitFinal(ok)).toMatchObject({ state: 'passed' });
    // A tree larger than the job's disk: the job's own limit, failed at once and named.
    const repo = await gh.createRepo('acme/too-big', { private: false });
    const sha = await repo.commit({ 'big.txt': randomBytes(6 * 1024 * 1024).toString('base64') });
    const big = await c.submit({
      arch: 'amd64',
      image: 'busybox',
      script: 'echo should not run',
      resources: { diskMiB: 4 },
      source: { git: repo.cloneUrl, sha },
    });
    const job = await c.waitFinal(big, 60_000);
    const log = await c.log(big);
    expect(job, log).toMatchObject({ state: 'failed', reason: 'source' });
    expect(job.attempts, log).toHaveLength(1);
    expect(log).toMatch(/does not fit the job's disk: give the job more \(resources\.diskMiB\)/);
    expect(node.state).toBe('active');
  }, 120_000);
});
