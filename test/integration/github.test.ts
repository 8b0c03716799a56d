import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { Webhooks } from '@octokit/webhooks';
import { beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createTaskQueue } from '../../queue/index.ts';
import type { ApiProcess } from '../../src/api/index.ts';
import { type JobRecord, poolLayout } from '../../src/core/index.ts';
import { startCluster, type TestCluster } from '../support/cluster.ts';
import { type FakeCheckRun, type FakeGitHub, startFakeGitHub } from '../support/fake-github.ts';
import { createDeliverer, example } from '../support/github-deliveries.ts';
import { checkLeftovers } from '../support/leak-check.ts';
import { eventually, testConfig } from '../support/test-host.ts';

const SECRET = `current-${randomBytes(8).toString('hex')}`;
const OLD_SECRET = `previous-${randomBytes(8).toString('hex')}`;
const INSTALLATION = 4242;
const token = randomBytes(20).toString('hex');

let c: TestCluster;
let api: ApiProcess;
let gh: FakeGitHub;

const gitHub = createDeliverer({ apiUrl: () => api.url, secret: SECRET, installation: INSTALLATION });
const { repository, pushPayload, deliver } = gitHub;

const runsOf = (sha: string): FakeCheckRun[] => [...gh.checkRuns.values()].filter((r) => r.head_sha === sha);

async function jobsOf(sha: string): Promise<JobRecord[]> {
  return (await c.queue.list({ label: `sha=${sha}`, limit: 100 })).jobs;
}

async function completed(sha: string, n: number, ms = 90_000): Promise<FakeCheckRun[]> {
  await eventually(
    () => runsOf(sha).filter((r) => r.status === 'completed').length >= n,
    `${n} completed check runs of ${sha.slice(0, 7)}`,
    ms,
  );
  return runsOf(sha);
}

beforeAll(async () => {
  gh = await startFakeGitHub();
  c = await startCluster();
  await c.addWorker('amd64', { slots: 2 });
  await c.addWorker('arm64', { slots: 2 });
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  api = await c.startApi(token, {
    ARCHWAY_GITHUB_APP_ID: '77',
    ARCHWAY_GITHUB_PRIVATE_KEY: privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(),
    ARCHWAY_GITHUB_WEBHOOK_SECRET: `${SECRET},${OLD_SECRET}`,
    ARCHWAY_GITHUB_API_URL: gh.url,
    ARCHWAY_ALLOW_LOOPBACK_SOURCES: '1',
  });
});

checkLeftovers('all', async () => {
  await api?.close();
  await c?.close();
  await gh?.close();
  if (gh)
    await rm(poolLayout(testConfig().ARCHWAY_POOL_PATH).gitMirrorsOf(gh.host), {
      recursive: true,
      force: true,
    });
});

const CONFIG = `language: shell
image: busybox
arch: [amd64, arm64]
script:
  - uname -m
  - cat hello.txt
  - env > /tmp/env.txt; cat /proc/self/environ | tr '\\0' '\\n' >> /tmp/env.txt; grep -c . /tmp/env.txt
  - cat /tmp/env.txt
  - ls -ln hello.txt
`;

describe('POST /webhooks/github', () => {
  it('refuses a bad or missing signature with 401 and writes nothing', async () => {
    const repo = await gh.createRepo('acme/unsigned');
    const sha = await repo.commit({ '.archway.yml': CONFIG, 'hello.txt': 'hi\n' });
    const payload = pushPayload(repo, sha);
    const before = (await c.client.keys(`*gh:*`)).sort();
    const bad = await deliver('push', payload, { secret: 'not-the-secret' });
    expect(bad.status).toBe(401);
    expect(JSON.parse(bad.body).error.code).toBe('SIGNATURE_INVALID');
    const missing = await deliver('push', payload, { signature: null });
    expect(missing.status).toBe(401);
    const tampered = await deliver('push', payload, {
      signature: await new Webhooks({ secret: SECRET }).sign(
        JSON.stringify({ ...payload, after: 'f'.repeat(40) }),
      ),
    });
    expect(tampered.status).toBe(401);
    await new Promise((r) => setTimeout(r, 500));
    expect((await c.client.keys(`*gh:*`)).sort()).toEqual(before);
    const events = createTaskQueue({
      redis: c.client,
      duplicate: () => c.client.duplicate(),
      keys: c.keys,
      name: c.keys.githubEventsQueue,
      schema: z.unknown(),
      attempts: 1,
      keepCompletedSeconds: 0,
      keepFailedSeconds: 0,
    });
    expect(await events.count()).toBe(0);
    await events.close();
    expect(await jobsOf(sha)).toEqual([]);
    expect(gh.calls).toEqual([]);
  });

  it('takes a delivery signed with a previous secret, and answers 204 to events it does not act on', async () => {
    const ping = await deliver('ping', { zen: 'Design for failure.', hook_id: 1 }, { secret: OLD_SECRET });
    expect(ping.status).toBe(204);
    const closed = example('pull_request', (e) => e.action === 'closed');
    expect((await deliver('pull_request', closed)).status).toBe(204);
    const doc = (await (await fetch(`${api.url}/openapi.json`)).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths)).toContain('/webhooks/github');
  });
});

describe('builds from GitHub', () => {
  it('builds a push on amd64 and arm64 end to end; check runs go queued -> in_progress -> completed', async () => {
    const repo = await gh.createRepo('acme/widget');
    const sha = await repo.commit({ '.archway.yml': CONFIG, 'hello.txt': 'hello from the repo\n' });
    const r = await deliver('push', pushPayload(repo, sha));
    expect(r.status).toBe(202);
    const runs = await completed(sha, 2);
    expect(runs).toHaveLength(2);
    const jobs = await jobsOf(sha);
    expect(jobs.map((j) => j.arch).sort()).toEqual(['amd64', 'arm64']);
    for (const run of runs) {
      expect(run.history).toEqual(['queued', 'in_progress', 'completed:success']);
      const job = jobs.find((j) => j.id === run.external_id);
      expect(job?.state).toBe('passed');
      // Details opens the job's page with a signed link (issue 12), no token needed.
      expect(run.details_url).toMatch(new RegExp(`^${api.url}/jobs/${job?.id}\\?exp=\\d+&sig=[\\w-]{43}$`));
      const details = await fetch(run.details_url ?? '');
      expect(details.status).toBe(200);
      expect(await details.text()).toContain(`<div id="log"`);
      expect(run.output.text).toContain('hello from the repo');
      expect(run.output.text).toContain(job?.arch === 'arm64' ? 'aarch64' : 'x86_64');
      // The tree is owned by the container's root.
      expect(run.output.text).toMatch(/-rw-r--r--\s+1 0\s+0\s+.*hello\.txt/);
      expect(run.output.summary).toContain('busybox');
      expect(job?.labels).toMatchObject({
        repo: 'acme/widget',
        sha,
        build_number: '1',
        event: 'push',
        // The repository is private: its jobs' sources are for admin tokens only (docs/api.md).
        visibility: 'private',
      });
    }
    // The worker fetched with an installation token limited to the repository's contents.
    const minted = gh.calls.filter((x) => x.path === `/app/installations/${INSTALLATION}/access_tokens`);
    expect(minted.some((x) => JSON.stringify(x.body ?? null).includes(`"repository_ids":[${repo.id}]`))).toBe(
      true,
    );
    expect(gh.gitAuth.some((a) => a?.startsWith('Basic '))).toBe(true);
    // ... and the token is in neither the log nor the container's environment.
    for (const job of jobs) {
      const text = await c.log(job.id);
      expect(text).toContain('TRAVIS_REPO_SLUG=acme/widget');
      for (const t of gh.tokens) expect(text).not.toContain(t);
      expect(text).not.toContain('x-access-token');
      expect(text).not.toMatch(/Authorization/i);
      expect(JSON.stringify(job.spec)).not.toContain('ghs_');
    }
  });

  it('makes no new job for a redelivery, nor for a check_suite request of a commit a push built', async () => {
    const repo = await gh.createRepo('acme/redelivered');
    const sha = await repo.commit({
      '.archway.yml': CONFIG.replace('[amd64, arm64]', 'amd64'),
      'hello.txt': 'x\n',
    });
    const first = await deliver('push', pushPayload(repo, sha));
    expect(first.status).toBe(202);
    const again = await deliver('push', pushPayload(repo, sha), { id: first.id });
    expect(again.status).toBe(200);
    expect(JSON.parse(again.body)).toMatchObject({ duplicate: true });
    const suite = example('check_suite', (e) => e.action === 'requested');
    const s = await deliver('check_suite', {
      ...suite,
      check_suite: { ...(suite.check_suite as object), head_sha: sha, head_branch: 'main' },
      repository: repository(repo, suite.repository as Record<string, unknown>),
      installation: { id: INSTALLATION },
    });
    expect(s.status).toBe(202);
    await completed(sha, 1);
    await new Promise((r) => setTimeout(r, 1500));
    expect(await jobsOf(sha)).toHaveLength(1);
    expect(runsOf(sha)).toHaveLength(1);
  });

  it('reports a config error as one failed check run quoting the error and its line', async () => {
    const repo = await gh.createRepo('acme/broken');
    const sha = await repo.commit({
      '.travis.yml':
        'language: shell\nimage: busybox\nscript:\n  - echo hi\njobs:\n  include:\n    - arch: amd64\n      env: [A=1\n',
    });
    expect((await deliver('push', pushPayload(repo, sha))).status).toBe(202);
    const [run] = await completed(sha, 1);
    expect(run?.name).toBe('archway: config');
    expect(run?.conclusion).toBe('failure');
    expect(run?.output.summary).toMatch(/\.travis\.yml, line \d+/);
    expect(await jobsOf(sha)).toEqual([]);
  });

  it('refuses an unknown arch with its line, and never runs it on amd64', async () => {
    const repo = await gh.createRepo('acme/riscv');
    const sha = await repo.commit({
      '.archway.yml':
        'language: shell\nimage: busybox\nscript: true\njobs:\n  include:\n    - arch: amd64\n    - arch: riscv64\n',
    });
    expect((await deliver('push', pushPayload(repo, sha))).status).toBe(202);
    const [run] = await completed(sha, 1);
    expect(run?.conclusion).toBe('failure');
    expect(run?.output.summary).toContain('line 7');
    expect(run?.output.summary).toContain("unknown arch 'riscv64'");
    expect(run?.output.summary).toContain('- arch: riscv64');
    expect(await jobsOf(sha)).toEqual([]);
  });

  it('refuses a YAML bomb before it costs memory', async () => {
    const repo = await gh.createRepo('acme/bomb');
    const lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (let i = 1; i < 12; i++) {
      const prev = String.fromCharCode(96 + i);
      const cur = String.fromCharCode(97 + i);
      lines.push(
        `${cur}: &${cur} [*${prev},*${prev},*${prev},*${prev},*${prev},*${prev},*${prev},*${prev},*${prev}]`,
      );
    }
    lines.push('script: *l');
    const sha = await repo.commit({ '.archway.yml': `${lines.join('\n')}\n` });
    expect((await deliver('push', pushPayload(repo, sha))).status).toBe(202);
    const [run] = await completed(sha, 1);
    expect(run?.conclusion).toBe('failure');
    expect(run?.output.summary).toMatch(/alias|values|expand/i);
    expect(await jobsOf(sha)).toEqual([]);
  });

  it('shows skipped jobs and ignored keys, and runs stages in order', async () => {
    const repo = await gh.createRepo('acme/stages');
    const sha = await repo.commit({
      '.archway.yml': `language: shell
image: busybox
os: [linux, osx]
services: [docker]
script: echo test stage
jobs:
  include:
    - stage: deploy
      script: echo deploy stage
`,
      'hello.txt': 'x\n',
    });
    expect((await deliver('push', pushPayload(repo, sha))).status).toBe(202);
    const runs = await completed(sha, 3);
    const skipped = runs.find((r) => r.conclusion === 'skipped');
    expect(skipped?.output.summary).toMatch(/osx|macOS/i);
    const test = runs.find((r) => r.name.includes('test /') && r.conclusion !== 'skipped');
    const deploy = runs.find((r) => r.name.includes('deploy /'));
    expect(test?.conclusion).toBe('success');
    expect(deploy?.conclusion).toBe('success');
    expect(test?.output.summary).toContain('`services`');
    const jobs = await jobsOf(sha);
    const t = jobs.find((j) => j.labels.stage === 'test');
    const d = jobs.find((j) => j.labels.stage === 'deploy');
    expect(Date.parse(d?.createdAt ?? '')).toBeGreaterThanOrEqual(Date.parse(t?.finishedAt ?? ''));
  });

  it('re-runs one job on check_run rerequested: a new job and a new check run of the same name', async () => {
    const repo = await gh.createRepo('acme/rerun');
    const sha = await repo.commit({
      '.archway.yml': CONFIG.replace('[amd64, arm64]', 'amd64'),
      'hello.txt': 'x\n',
    });
    await deliver('push', pushPayload(repo, sha));
    const [run] = await completed(sha, 1);
    const payload = example('check_run', (e) => e.action === 'rerequested');
    const r = await deliver('check_run', {
      ...payload,
      check_run: {
        ...(payload.check_run as object),
        id: run?.id,
        external_id: run?.external_id,
        head_sha: sha,
        name: run?.name,
      },
      repository: repository(repo, payload.repository as Record<string, unknown>),
      installation: { id: INSTALLATION },
    });
    expect(r.status).toBe(202);
    const runs = await completed(sha, 2);
    const again = runs.find((x) => x.id !== run?.id);
    expect(again?.name).toBe(run?.name);
    expect(again?.external_id).not.toBe(run?.external_id);
    expect(again?.history).toEqual(['queued', 'in_progress', 'completed:success']);
    expect(await jobsOf(sha)).toHaveLength(2);
  });

  it('restarts a job of a GitHub build through the API by the re-run path: a new check run of the same name follows it', async () => {
    const repo = await gh.createRepo('acme/api-restart');
    const sha = await repo.commit({
      '.archway.yml': CONFIG.replace('[amd64, arm64]', 'amd64'),
      'hello.txt': 'x\n',
    });
    await deliver('push', pushPayload(repo, sha));
    const [run] = await completed(sha, 1);
    const oldId = String(run?.external_id);
    const res = await fetch(`${api.url}/v1/jobs/${oldId}/restart`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    });
    const body = (await res.json()) as { job: string; previous: string; kind: string; build?: unknown };
    expect(res.status).toBe(202);
    expect(body).toMatchObject({ previous: oldId, kind: 'github-build' });
    expect(body.build).toBeUndefined();
    const runs = await completed(sha, 2);
    const again = runs.find((x) => x.id !== run?.id);
    expect(again?.name).toBe(run?.name);
    expect(again?.external_id).toBe(body.job);
    expect(again?.history).toEqual(['queued', 'in_progress', 'completed:success']);
    expect((await c.queue.get(body.job))?.restartOf).toBe(oldId);
    expect((await c.queue.get(oldId))?.restartedBy).toBe(body.job);
    // The old run again is refused (restart the newest), and makes no job or check run.
    const twice = await fetch(`${api.url}/v1/jobs/${oldId}/restart`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    });
    expect(twice.status).toBe(409);
    expect(await jobsOf(sha)).toHaveLength(2);
    expect(runsOf(sha)).toHaveLength(2);
  });

  it('cancels the older build of a branch with reason superseded when a new push comes', async () => {
    const repo = await gh.createRepo('acme/busy');
    const slow = await repo.commit({
      '.archway.yml': 'language: shell\nimage: busybox\nscript: sleep 60\n',
    });
    await deliver('push', pushPayload(repo, slow));
    await eventually(
      async () => (await jobsOf(slow))[0]?.state === 'running',
      'the first build to run',
      60_000,
    );
    const fast = await repo.commit({
      '.archway.yml': 'language: shell\nimage: busybox\nscript: echo fast\n',
    });
    await deliver('push', pushPayload(repo, fast));
    const [old] = await completed(slow, 1, 30_000);
    expect(old?.conclusion).toBe('cancelled');
    const job = (await jobsOf(slow))[0];
    expect(job).toMatchObject({ state: 'canceled', reason: 'superseded' });
    const [next] = await completed(fast, 1);
    expect(next?.conclusion).toBe('success');
  });

  it('keeps a build when the GitHub API answers 500 for a while, and reports once it recovers', async () => {
    const repo = await gh.createRepo('acme/outage');
    const sha = await repo.commit({
      '.archway.yml': CONFIG.replace('[amd64, arm64]', 'arm64'),
      'hello.txt': 'x\n',
    });
    gh.failFor(2500);
    expect((await deliver('push', pushPayload(repo, sha))).status).toBe(202);
    const [run] = await completed(sha, 1, 120_000);
    expect(run?.conclusion).toBe('success');
    expect(gh.calls.some((x) => x.status === 500)).toBe(true);
    expect(await jobsOf(sha)).toHaveLength(1);
  });
});

describe('pull requests and buttons', () => {
  it("builds a fork's pull request from the fork's clone URL, without a token", async () => {
    const base = await gh.createRepo('acme/upstream');
    await base.commit({
      '.archway.yml': CONFIG.replace('[amd64, arm64]', 'amd64'),
      'hello.txt': 'upstream\n',
    });
    const fork = await gh.createRepo('contributor/upstream', { private: false });
    const sha = await fork.commit(
      { '.archway.yml': CONFIG.replace('[amd64, arm64]', 'amd64'), 'hello.txt': 'from the fork\n' },
      { branch: 'feature' },
    );
    await gh.openPullRequest(base, fork, 'feature', 7);
    const p = example('pull_request', (e) => e.action === 'opened');
    const pr = p.pull_request as Record<string, Record<string, unknown>>;
    const minted = gh.tokens.length;
    const r = await deliver('pull_request', {
      ...p,
      number: 7,
      pull_request: {
        ...pr,
        head: { ...pr.head, ref: 'feature', sha, repo: { ...repository(fork), fork: true, private: false } },
        base: { ...pr.base, ref: 'main', repo: repository(base) },
      },
      repository: repository(base, p.repository as Record<string, unknown>),
      installation: { id: INSTALLATION },
    });
    expect(r.status).toBe(202);
    const [run] = await completed(sha, 1);
    expect(run?.conclusion).toBe('success');
    expect(run?.output.text).toContain('from the fork');
    expect(run?.output.text).toContain('TRAVIS_PULL_REQUEST=7');
    expect(run?.output.text).toContain('TRAVIS_PULL_REQUEST_SLUG=contributor/upstream');
    const [job] = await jobsOf(sha);
    expect(job?.spec.source?.git).toBe(fork.cloneUrl);
    // The installation's token is for its own repositories: none was made for the fork's source.
    expect(await c.client.exists(c.keys.sourceCredential(job?.id ?? ''))).toBe(0);
    expect(gh.tokens.length - minted).toBeLessThanOrEqual(1);
  });

  it("cancels a job from its check run's Cancel button", async () => {
    const repo = await gh.createRepo('acme/button');
    const sha = await repo.commit({ '.archway.yml': 'language: shell\nimage: busybox\nscript: sleep 60\n' });
    await deliver('push', pushPayload(repo, sha));
    await eventually(async () => (await jobsOf(sha))[0]?.state === 'running', 'the job to run', 60_000);
    const run = runsOf(sha)[0];
    expect(run?.actions).toEqual([expect.objectContaining({ identifier: 'cancel' })]);
    const p = example('check_run', (e) => e.action === 'requested_action');
    const r = await deliver('check_run', {
      ...p,
      check_run: { ...(p.check_run as object), id: run?.id, external_id: run?.external_id, head_sha: sha },
      requested_action: { identifier: 'cancel' },
      repository: repository(repo, p.repository as Record<string, unknown>),
      installation: { id: INSTALLATION },
    });
    expect(r.status).toBe(202);
    const [done] = await completed(sha, 1, 30_000);
    expect(done?.conclusion).toBe('cancelled');
    expect((await jobsOf(sha))[0]).toMatchObject({ state: 'canceled', reason: 'canceled' });
  });
});

describe('source URLs of API jobs', () => {
  it.each([
    'file:///etc',
    '/srv/repo.git',
    'ssh://git@example.com/a/b.git',
    'https://user:pw@example.com/a/b.git',
  ])('refuses %s with 400 naming source.git', async (git) => {
    const res = await fetch(`${api.url}/v1/jobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ arch: 'amd64', image: 'busybox', script: 'true', source: { git } }),
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { field: string } };
    expect(body.error.field).toBe('source.git');
  });
});
