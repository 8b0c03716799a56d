import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import type { ApiProcess } from '../../src/api/index.ts';
import { poolLayout } from '../../src/core/index.ts';
import { startCluster, type TestCluster } from '../support/cluster.ts';
import { checkLeftovers } from '../support/leak-check.ts';
import { TEST_ENV, testConfig } from '../support/test-host.ts';

// The API and the worker as `up` runs them: an API on http://127.0.0.1 and sources on the loopback
// refused (no ARCHWAY_ALLOW_LOOPBACK_SOURCES). An uploaded tree is the API's own URL, so it is
// fetched all the same; a user's URL to the same place is not.
const token = `t-${randomBytes(12).toString('hex')}`;
let c: TestCluster;
let api: ApiProcess;
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'archway-upload-policy-'));
  c = await startCluster();
  await c.addWorker('amd64', { slots: 1, warm: 0, allowLoopbackSources: false });
  api = await c.startApi(token, { ARCHWAY_UPLOAD_DIR: join(work, 'uploads'), ARCHWAY_EGRESS: 'false' });
}, 120_000);

checkLeftovers(
  'all',
  () => api?.close(),
  () => c?.close(),
  () =>
    api &&
    rm(poolLayout(testConfig().ARCHWAY_POOL_PATH).gitMirrorsOf(new URL(api.url).host), {
      recursive: true,
      force: true,
    }),
  () => work && rm(work, { recursive: true, force: true }),
);

const archway = (args: string[], cwd?: string) =>
  execa(join(process.cwd(), 'bin/archway'), args, {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      ...TEST_ENV,
      ARCHWAY_URL: api.url,
      ARCHWAY_TOKEN: token,
    },
    extendEnv: false,
    reject: false,
    ...(cwd ? { cwd } : {}),
  });

describe('a build of an uploaded tree on an API at http://127.0.0.1 (as up runs it)', () => {
  it('runs: the workers fetch the upload from the API though loopback sources are refused', async () => {
    const dir = await mkdtemp(join(work, 'tree-'));
    await writeFile(
      join(dir, '.travis.yml'),
      'language: shell\nimage: busybox\narch: amd64\nscript: cat hello.txt\n',
    );
    await writeFile(join(dir, 'hello.txt'), 'hello from the uploaded tree\n');
    const run = await archway(['build', dir]);
    expect(run.stderr).not.toMatch(/not allowed|never fetched/);
    expect(run.stdout).toContain('[amd64] hello from the uploaded tree');
    expect(run.exitCode).toBe(0);
    // Not a terminal: no fold or timing marker lines, no colour codes (the page shows those).
    expect(run.stdout).toContain('[amd64] $ cat hello.txt');
    expect(run.stdout).not.toMatch(/travis_(fold|time):/);
    expect(run.stdout).not.toContain('\x1b[');
    const raw = await archway(['build', dir, '--raw']);
    expect(raw.exitCode).toBe(0);
    expect(raw.stdout).toMatch(/\[amd64\] travis_fold:start:script/);
    expect(raw.stdout).toContain('\x1b[');
    // Nothing of a build is kept when its source is refused: no build starts for ever.
    const builds = (await (
      await fetch(`${api.url}/v1/builds`, { headers: { authorization: `Bearer ${token}` } })
    ).json()) as { builds: { state: string }[] };
    expect(builds.builds.map((b) => b.state)).toEqual(['passed', 'passed']);
  }, 180_000);

  it("refuses a user's job that names an upload, or a loopback URL, by field; nothing is queued", async () => {
    const post = (source: Record<string, string>) =>
      fetch(`${api.url}/v1/jobs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ arch: 'amd64', image: 'busybox', script: 'true', source }),
      });
    const before = await c.client.keys(`*${c.keys.prefix}*job:*`);
    const forged = await post({
      git: `${api.url}/git/uploads/u${'0'.repeat(24)}.git`,
      upload: `u${'0'.repeat(24)}`,
    });
    expect(forged.status).toBe(400);
    expect(((await forged.json()) as { error: { field: string } }).error.field).toBe('source.upload');
    const loopback = await post({ git: `${api.url}/git/uploads/u${'0'.repeat(24)}.git` });
    expect(loopback.status).toBe(400);
    expect(((await loopback.json()) as { error: { message: string } }).error.message).toMatch(/not allowed/);
    expect(await c.client.keys(`*${c.keys.prefix}*job:*`)).toEqual(before);
  });
});
