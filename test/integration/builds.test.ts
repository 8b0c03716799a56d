import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiProcess } from '../../src/api/index.ts';
import { makeTreeBundle } from '../../src/cli/tree-bundle.ts';
import { poolLayout, runCommand } from '../../src/core/index.ts';
import { startCluster, type TestCluster } from '../support/cluster.ts';
import { type GitHttpServer, startGitHttpServer } from '../support/git-http-server.ts';
import { checkLeftovers } from '../support/leak-check.ts';
import { eventually, TEST_ENV, testConfig } from '../support/test-host.ts';

const token = `t-${randomBytes(12).toString('hex')}`;
let c: TestCluster;
let api: ApiProcess;
let work: string;
let uploadDir: string;
const UPLOAD_LIMIT = 1024 * 1024;
const CONFIG_FETCH_LIMIT = 256 * 1024;

interface BuildJson {
  id: string;
  state: string;
  jobs: {
    id: string;
    name: string;
    arch: string;
    stage: string;
    state: string;
    allowFailure: boolean;
    startedAt?: string;
    finishedAt?: string;
    previous: string[];
  }[];
}

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

async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${api.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body !== undefined && !(body instanceof Buffer) ? { 'content-type': 'application/json' } : {}),
      ...headers,
    },
    ...(body === undefined ? {} : { body: body instanceof Buffer ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  // biome-ignore lint/suspicious/noExplicitAny: the answers' shapes are what the tests check
  return { status: res.status, json: (text ? JSON.parse(text) : undefined) as Record<string, any> };
}

/** A directory with these files (paths may have directories); returns its path. */
async function tree(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(work, 'tree-'));
  for (const [p, text] of Object.entries(files)) {
    await mkdir(dirname(join(dir, p)), { recursive: true });
    await writeFile(join(dir, p), text);
  }
  return dir;
}

async function upload(bundle: Buffer) {
  return call('POST', '/v1/uploads', bundle, { 'content-type': 'application/x-git-bundle' });
}

async function finished(id: string, ms = 120_000): Promise<BuildJson> {
  let b: BuildJson | undefined;
  await eventually(
    async () => {
      b = (await call('GET', `/v1/builds/${id}`)).json as BuildJson;
      return ['passed', 'failed', 'canceled'].includes(b.state);
    },
    `build ${id} finished`,
    ms,
  );
  return b as BuildJson;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'archway-builds-test-'));
  uploadDir = join(work, 'uploads');
  c = await startCluster();
  await c.addWorker('amd64', { slots: 3 });
  await c.addWorker('arm64', { slots: 2 });
  await c.addWorker('ppc64le', { slots: 2 });
  await c.addWorker('s390x', { slots: 2 });
  api = await c.startApi(token, {
    ARCHWAY_ALLOW_LOOPBACK_SOURCES: '1',
    ARCHWAY_UPLOAD_DIR: uploadDir,
    ARCHWAY_UPLOAD_LIMIT_BYTES: String(UPLOAD_LIMIT),
    ARCHWAY_CONFIG_FETCH_LIMIT_BYTES: String(CONFIG_FETCH_LIMIT),
    // Builds' jobs get no network here: busybox jobs need none, and the egress setup is not under test.
    ARCHWAY_EGRESS: 'false',
  });
}, 120_000);

checkLeftovers(
  'all',
  () => api?.close(),
  () => c?.close(),
  // The workers' mirrors of this API's uploads (one per upload), and the test's own files.
  () =>
    api &&
    rm(poolLayout(testConfig().ARCHWAY_POOL_PATH).gitMirrorsOf(new URL(api.url).host), {
      recursive: true,
      force: true,
    }),
  () => work && rm(work, { recursive: true, force: true }),
);

describe('archway build', () => {
  it('runs a 4-arch x 2-env .travis.yml of a local checkout on real workers, each line prefixed, and exits 0', async () => {
    const dir = await tree({
      '.travis.yml': `language: shell
image: busybox
arch: [amd64, arm64, ppc64le, s390x]
env: [GREETING=one, GREETING=two]
script:
  - echo "hello $GREETING from $(uname -m)"
  - cat hello.txt
`,
      'hello.txt': 'committed\n',
      'build.log': 'ignored output\n',
      '.gitignore': '*.log\n',
    });
    await runCommand('git', ['-C', dir, 'init', '-q', '-b', 'feature']);
    await runCommand('git', ['-C', dir, 'add', '-A']);
    await runCommand('git', ['-C', dir, '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'x']);
    // An uncommitted change is what is built.
    await writeFile(join(dir, 'hello.txt'), 'uncommitted change\n');
    const r = await archway(['build', dir]);
    expect(r.stderr).toMatch(/8 jobs/);
    expect(r.exitCode).toBe(0);
    const uname = { amd64: 'x86_64', arm64: 'aarch64', ppc64le: 'ppc64le', s390x: 's390x' };
    for (const [arch, m] of Object.entries(uname)) {
      for (const g of ['one', 'two']) {
        expect(r.stdout).toContain(`[${arch} GREETING=${g}] hello ${g} from ${m}`);
        expect(r.stdout).toContain(`[${arch} GREETING=${g}] uncommitted change`);
      }
    }
    expect(r.stdout).not.toContain('committed\n');
    // The summary: one row per job, all passed.
    const rows = r.stdout.split('\n').filter((l) => /^\d+\.\d+\s/.test(l));
    expect(rows).toHaveLength(8);
    for (const row of rows) expect(row).toMatch(/\stest\s+passed\s/);
    // The build is listed, with the checkout's branch.
    const list = await call('GET', '/v1/builds?branch=feature&state=passed');
    expect(list.json.builds).toHaveLength(1);
  }, 300_000);

  it('fails (non-zero, with the summary) when a required job fails; an allowed failure does not count; a failed stage stops the next', async () => {
    const dir = await tree({
      '.archway.yml': `language: shell
image: busybox
arch: amd64
jobs:
  allow_failures:
    - env: FLAKY=1
  include:
    - stage: test
      env: OK=1
      script: echo fine
    - stage: test
      env: FLAKY=1
      script: exit 3
    - stage: test
      env: BAD=1
      script: test -f marker || exit 4
    - stage: deploy
      script: echo deployed
`,
    });
    const r = await archway(['build', dir, '--branch', 'main']);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toMatch(/amd64 OK=1\s+amd64\s+test\s+passed/);
    expect(r.stdout).toMatch(/amd64 FLAKY=1\s+amd64\s+test\s+failed \(allowed to fail\)/);
    expect(r.stdout).toMatch(/amd64 BAD=1\s+amd64\s+test\s+failed/);
    expect(r.stdout).toMatch(/\s+amd64\s+deploy\s+skipped/);
    expect(r.stdout).not.toContain('deployed');
    const id =
      ((await call('GET', '/v1/builds?state=failed&branch=main')).json.builds as BuildJson[])[0]?.id ?? '';
    const before = (await call('GET', `/v1/builds/${id}`)).json as BuildJson;
    // Its page (issue 12): a signed link that opens it with no token, its jobs by stage.
    const pageUrl = String((before as BuildJson & { pageUrl?: string }).pageUrl);
    expect(pageUrl).toMatch(new RegExp(`^${api.url}/builds/${id}\\?exp=\\d+&sig=[\\w-]{43}$`));
    const page = await fetch(pageUrl);
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('<section class="stage" data-stage="test">');
    expect(html).toContain('<section class="stage" data-stage="deploy">');
    expect(html.match(/<tr class="slot"/g)).toHaveLength(4);
    expect((await fetch(`${api.url}/builds/${id}`)).status).toBe(403);
    // Restart of the failed ones: the job that passed keeps its run; the others get a new one.
    const restart = await archway(['restart', id, '--failed']);
    expect(restart.exitCode).toBe(0);
    const after = await finished(id);
    expect(after.jobs[0]?.id).toBe(before.jobs[0]?.id);
    for (const i of [1, 2, 3]) {
      expect(after.jobs[i]?.id).not.toBe(before.jobs[i]?.id);
      expect(after.jobs[i]?.previous).toEqual([before.jobs[i]?.id]);
    }
    // One job of it again, through `restart JOB`: the job records link the runs.
    const one = await archway(['restart', after.jobs[2]?.id ?? '']);
    expect(one.exitCode).toBe(0);
    const newId = one.stdout.trim();
    expect(one.stderr).toContain(`restarted ${after.jobs[2]?.id} as ${newId} (build ${id})`);
    expect((await c.queue.get(newId))?.restartOf).toBe(after.jobs[2]?.id);
    expect((await c.queue.get(after.jobs[2]?.id ?? ''))?.restartedBy).toBe(newId);
    expect((await finished(id)).jobs[2]?.previous).toEqual([before.jobs[2]?.id, after.jobs[2]?.id]);
    expect(after.state).toBe('failed');
  }, 240_000);

  it('runs stages in order, and with fast_finish passes before an allowed failure has finished', async () => {
    const up = await upload((await makeTreeBundle(await tree({ 'x.txt': 'x\n' }))).bundle);
    expect(up.status).toBe(201);
    const created = await call('POST', '/v1/builds', {
      source: { upload: up.json.id },
      config: `language: shell
image: busybox
arch: amd64
jobs:
  fast_finish: true
  allow_failures:
    - env: SLOW=1
  include:
    - stage: one
      script: sleep 1
    - stage: one
      env: SLOW=1
      script: sleep 60
    - stage: two
      script: echo two
`,
    });
    expect(created.status).toBe(201);
    const b = await finished(created.json.build.id, 60_000);
    expect(b.state).toBe('passed');
    const [first, slow, second] = b.jobs;
    expect(slow?.state).toBe('running');
    expect(Date.parse(second?.startedAt ?? '')).toBeGreaterThanOrEqual(Date.parse(first?.finishedAt ?? ''));
    // A restart of a job still running is refused, and changes nothing.
    const refused = await call('POST', `/v1/jobs/${slow?.id}/restart`);
    expect(refused.status).toBe(409);
    expect(refused.json.error.message).toMatch(/still running/);
    await c.queue.cancel(slow?.id ?? '');
    await c.waitFinal(slow?.id ?? '');
  }, 120_000);
});

describe('archway submit --git', () => {
  it("fetches the job's source from a git URL (here an upload's) and refuses a refused URL by name", async () => {
    const up = await upload(
      (await makeTreeBundle(await tree({ 'greeting.txt': 'from the source\n' }))).bundle,
    );
    const git = `${api.url}/git/uploads/${up.json.id}.git`;
    const r = await archway([
      'submit',
      '--arch',
      'amd64',
      '--image',
      'busybox',
      '--follow',
      '--git',
      git,
      '--ref',
      'refs/heads/main',
      '--sha',
      up.json.sha,
      '--',
      'cat greeting.txt',
    ]);
    expect(r.stdout).toContain('from the source');
    expect(r.exitCode).toBe(0);
    const refused = await archway([
      'submit',
      '--arch',
      'amd64',
      '--image',
      'busybox',
      '--git',
      'file:///etc',
      '--',
      'true',
    ]);
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toMatch(/source\.git/);
  }, 60_000);
});

describe('builds: cancel', () => {
  it('cancels a running build: its jobs stop, a restart while it ran was refused, a second cancel is a 409', async () => {
    const up = await upload((await makeTreeBundle(await tree({ x: 'x\n' }))).bundle);
    const created = await call('POST', '/v1/builds', {
      source: { upload: up.json.id },
      config:
        'language: shell\nimage: busybox\narch: amd64\nscript: sleep 60\njobs:\n  include:\n    - stage: one\n    - stage: two\n',
    });
    const id = created.json.build.id as string;
    await eventually(
      async () => ((await call('GET', `/v1/builds/${id}`)).json as BuildJson).jobs[0]?.state === 'running',
      'first job running',
      30_000,
    );
    const early = await call('POST', `/v1/builds/${id}/restart`);
    expect(early.status).toBe(409);
    expect(early.json.error.message).toMatch(/still running/);
    const r = await call('POST', `/v1/builds/${id}/cancel`);
    expect(r.status).toBe(202);
    expect(r.json.state).toBe('canceled');
    const first = (r.json as BuildJson).jobs[0]?.id ?? '';
    expect((await c.waitFinal(first)).state).toBe('canceled');
    const b = (await call('GET', `/v1/builds/${id}`)).json as BuildJson;
    expect(b.jobs[1]?.state).toBe('canceled');
    expect(await c.queue.get(b.jobs[1]?.id ?? '')).toBeUndefined();
    expect((await call('POST', `/v1/builds/${id}/cancel`)).status).toBe(409);
    expect((await call('GET', `/v1/builds/b${'0'.repeat(16)}`)).status).toBe(404);
  }, 60_000);
});

describe('builds: bad input', () => {
  it('answers a config error with the line, column and caret that config expand prints; nothing is queued', async () => {
    const before = (await c.queue.list({ limit: 100 })).jobs.length;
    const builds = (await call('GET', '/v1/builds?limit=100')).json.builds.length;
    const up = await upload((await makeTreeBundle(await tree({ a: 'a\n' }))).bundle);
    const r = await call('POST', '/v1/builds', {
      source: { upload: up.json.id },
      config:
        'language: shell\nimage: busybox\nscript: true\njobs:\n  include:\n    - arch: amd64\n    - arch: riscv64\n',
    });
    expect(r.status).toBe(400);
    expect(r.json.error.field).toBe('config');
    expect(r.json.error.message).toMatch(/^config: line 7, column \d+: .*riscv64/);
    expect(r.json.error.message).toMatch(/\n7 \|\s+- arch: riscv64\n\s+\^$/);
    expect((await c.queue.list({ limit: 100 })).jobs.length).toBe(before);
    expect((await call('GET', '/v1/builds?limit=100')).json.builds.length).toBe(builds);
  });

  it('refuses an upload over the limit with 413 and keeps nothing', async () => {
    const dir = await tree({ '.travis.yml': 'script: true\n' });
    await writeFile(join(dir, 'big.bin'), randomBytes(UPLOAD_LIMIT + 4096));
    const kept = (await readdir(uploadDir).catch(() => [] as string[])).sort();
    const r = await upload((await makeTreeBundle(dir)).bundle);
    expect(r.status).toBe(413);
    expect(r.json.error.code).toBe('UPLOAD_TOO_LARGE');
    expect(r.json.error.message).toMatch(/ARCHWAY_UPLOAD_LIMIT_BYTES/);
    const cli = await archway(['build', dir]);
    expect(cli.exitCode).not.toBe(0);
    expect(cli.stderr).toMatch(/upload refused \(413\)/);
    // Neither the bundle nor a repository of it is left.
    expect((await readdir(uploadDir).catch(() => [] as string[])).sort()).toEqual(kept);
  });

  it('refuses a body that is not a bundle, and a tree with a `..` entry', async () => {
    const notBundle = await upload(Buffer.from('not a bundle at all'));
    expect(notBundle.status).toBe(400);
    expect(notBundle.json.error.message).toMatch(/not a git bundle/);
    // A hand-made tree whose entry is named `..` (git itself never makes one).
    const g = await mkdtemp(join(work, 'evil-'));
    await runCommand('git', ['init', '-q', '--bare', g]);
    const blob = (
      await runCommand('git', ['--git-dir', g, 'hash-object', '-w', '--stdin'], { input: 'x\n' })
    ).trim();
    const sub = (
      await runCommand('git', ['--git-dir', g, 'mktree'], { input: `100644 blob ${blob}\tpasswd\n` })
    ).trim();
    const top = (
      await runCommand('git', ['--git-dir', g, 'mktree'], { input: `040000 tree ${sub}\t..\n` })
    ).trim();
    const commit = (
      await runCommand('git', ['--git-dir', g, 'commit-tree', top, '-m', 'evil'], {
        env: {
          GIT_AUTHOR_NAME: 'e',
          GIT_AUTHOR_EMAIL: 'e@e',
          GIT_COMMITTER_NAME: 'e',
          GIT_COMMITTER_EMAIL: 'e@e',
        },
      })
    ).trim();
    await runCommand('git', ['--git-dir', g, 'update-ref', 'refs/heads/main', commit]);
    const file = join(work, 'evil.bundle');
    await runCommand('git', ['--git-dir', g, 'bundle', 'create', '--quiet', file, 'refs/heads/main']);
    const r = await upload(await readFile(file));
    expect(r.status).toBe(400);
    expect(r.json.error.message).toMatch(/refused.*(hasDotdot|\.\.)/i);
  });

  it('keeps a symlink pointing outside the tree a symlink: the job never sees the host file', async () => {
    const secret = join(work, `host-secret-${randomBytes(4).toString('hex')}`);
    await writeFile(secret, 'HOST-ONLY-CONTENT\n');
    const dir = await tree({
      '.travis.yml':
        'language: shell\nimage: busybox\narch: amd64\nscript:\n  - readlink link\n  - cat link || echo "no such file here"\n',
    });
    await symlink(secret, join(dir, 'link'));
    const r = await archway(['build', dir]);
    expect(r.stdout).toContain(`] ${secret}`);
    expect(r.stdout).toContain('no such file here');
    expect(r.stdout).not.toContain('HOST-ONLY-CONTENT');
    expect(r.exitCode).toBe(0);
  }, 120_000);

  it('refuses an unknown upload, a refused source URL, an unknown arch filter, and a build of no job', async () => {
    const unknown = await call('POST', '/v1/builds', {
      source: { upload: `u${'0'.repeat(24)}` },
      config: 'script: true\n',
    });
    expect(unknown.status).toBe(400);
    expect(unknown.json.error.field).toBe('source.upload');
    const file = await call('POST', '/v1/builds', {
      source: { git: 'file:///etc' },
      config: 'script: true\n',
    });
    expect(file.status).toBe(400);
    expect(file.json.error.field).toBe('source.git');
    const up = await upload(
      (
        await makeTreeBundle(
          await tree({ '.travis.yml': 'language: shell\nimage: busybox\narch: amd64\nscript: true\n' }),
        )
      ).bundle,
    );
    const arch = await call('POST', '/v1/builds', { source: { upload: up.json.id }, arches: ['riscv64'] });
    expect(arch.status).toBe(400);
    const none = await call('POST', '/v1/builds', { source: { upload: up.json.id }, arches: ['s390x'] });
    expect(none.status).toBe(400);
    expect(none.json.error.message).toMatch(/no job of the config runs on s390x/);
    const noConfig = await call('POST', '/v1/builds', {
      source: { upload: (await upload((await makeTreeBundle(await tree({ x: 'x' }))).bundle)).json.id },
    });
    expect(noConfig.status).toBe(400);
    expect(noConfig.json.error.message).toMatch(/no \.archway\.yml or \.travis\.yml/);
  });

  it('returns the first build for a retried Idempotency-Key, 409 for the key with another body', async () => {
    const up = await upload(
      (
        await makeTreeBundle(
          await tree({ '.travis.yml': 'language: shell\nimage: busybox\narch: amd64\nscript: true\n' }),
        )
      ).bundle,
    );
    const body = { source: { upload: up.json.id } };
    const a = await call('POST', '/v1/builds', body, { 'idempotency-key': 'k-1' });
    const b = await call('POST', '/v1/builds', body, { 'idempotency-key': 'k-1' });
    expect(a.status).toBe(201);
    expect(b.status).toBe(200);
    expect(b.json.build.id).toBe(a.json.build.id);
    const other = await call(
      'POST',
      '/v1/builds',
      { ...body, env: { X: '1' } },
      { 'idempotency-key': 'k-1' },
    );
    expect(other.status).toBe(409);
    await finished(a.json.build.id);
    const doc = (await (await fetch(`${api.url}/openapi.json`)).json()) as { paths: Record<string, unknown> };
    for (const p of [
      '/v1/builds',
      '/v1/builds/{id}',
      '/v1/builds/{id}/cancel',
      '/v1/builds/{id}/restart',
      '/v1/jobs/{id}/restart',
      '/v1/uploads',
    ])
      expect(Object.keys(doc.paths)).toContain(p);
  }, 60_000);
});

describe('builds from a git source: the API reads its config', () => {
  let repos: string;
  let filtered: GitHttpServer;
  let plain: GitHttpServer;
  const gitEnv = {
    GIT_AUTHOR_NAME: 't',
    GIT_AUTHOR_EMAIL: 't@t',
    GIT_COMMITTER_NAME: 't',
    GIT_COMMITTER_EMAIL: 't@t',
  };
  /** Commits `files` on `branch` of the work tree `wt` and pushes it to repos/src.git; returns the sha. */
  async function commit(wt: string, branch: string, files: Record<string, string | Buffer>): Promise<string> {
    await runCommand('git', ['-C', wt, 'checkout', '-q', '-B', branch]);
    for (const [p, text] of Object.entries(files)) await writeFile(join(wt, p), text);
    await runCommand('git', ['-C', wt, 'add', '-A']);
    await runCommand('git', ['-C', wt, 'commit', '-qm', `on ${branch}`], { env: gitEnv });
    await runCommand('git', ['-C', wt, 'push', '-q', '-f', join(repos, 'src.git'), `${branch}:${branch}`]);
    return runCommand('git', ['-C', wt, 'rev-parse', 'HEAD']);
  }
  let wt: string;
  let mainSha: string;

  beforeAll(async () => {
    repos = await mkdtemp(join(work, 'repos-'));
    await runCommand('git', ['init', '-q', '--bare', join(repos, 'src.git')]);
    wt = await mkdtemp(join(work, 'wt-'));
    await runCommand('git', ['-C', wt, 'init', '-q', '-b', 'main']);
    // A blob over the fetch limit, which does not compress: only a filtered fetch stays under it.
    mainSha = await commit(wt, 'main', {
      '.travis.yml': 'language: shell\nimage: busybox\narch: amd64\nscript: cat hello.txt\n',
      'hello.txt': 'from the commit that was read\n',
      'big.bin': randomBytes(CONFIG_FETCH_LIMIT * 2),
    });
    await runCommand('git', ['--git-dir', join(repos, 'src.git'), 'symbolic-ref', 'HEAD', 'refs/heads/main']);
    filtered = await startGitHttpServer(repos, { allowFilter: true });
    plain = await startGitHttpServer(repos);
  });
  afterAll(async () => {
    await filtered?.close();
    await plain?.close();
  });

  const scratch = () => readdir(join(uploadDir, '.config-reads')).catch(() => [] as string[]);

  it('reads .travis.yml at the ref, pins the build to that commit, and the job builds it though the ref moved', async () => {
    const r = await call('POST', '/v1/builds', { source: { git: `${filtered.url}/src.git`, ref: 'main' } });
    expect(r.status, JSON.stringify(r.json)).toBe(201);
    expect(r.json.build.source.sha).toBe(mainSha);
    expect(r.json.build.config).toBe('.travis.yml');
    // The ref moves on before the job has fetched: the job still builds the commit the config came from.
    await commit(wt, 'main', { 'hello.txt': 'from a later commit\n' });
    const b = await finished(r.json.build.id, 120_000);
    expect(b.state).toBe('passed');
    const log = await (
      await fetch(`${api.url}/v1/jobs/${b.jobs[0]?.id}/log`, {
        headers: { authorization: `Bearer ${token}` },
      })
    ).text();
    expect(log).toContain('from the commit that was read');
    expect(log).not.toContain('from a later commit');
    // An .archway.yml comes first; with a sha (no ref) that commit is read.
    const sha = await commit(wt, 'main', {
      '.archway.yml': 'language: shell\nimage: busybox\narch: [amd64, arm64]\nscript: true\n',
    });
    const a = await call('POST', '/v1/builds', { source: { git: `${filtered.url}/src.git`, sha } });
    expect(a.status).toBe(201);
    expect(a.json.build.config).toBe('.archway.yml');
    expect(a.json.build.jobs.map((j: { arch: string }) => j.arch)).toEqual(['amd64', 'arm64']);
    expect(a.json.build.source.sha).toBe(sha);
    await finished(a.json.build.id);
    expect(await scratch()).toEqual([]);
  }, 180_000);

  it('answers a missing file, an unknown ref or sha, an unreachable or refused source, a fetch over the limit with a 400 naming it; nothing is queued or left', async () => {
    const nofile = await commit(wt, 'nofile', { 'only.txt': 'no config here\n' });
    await runCommand('git', ['-C', wt, 'rm', '-q', '--ignore-unmatch', '.travis.yml', '.archway.yml']);
    await runCommand('git', ['-C', wt, 'commit', '-qm', 'no config'], { env: gitEnv });
    await runCommand('git', ['-C', wt, 'push', '-q', '-f', join(repos, 'src.git'), 'nofile:nofile']);
    const noConfigSha = await runCommand('git', ['-C', wt, 'rev-parse', 'HEAD']);
    expect(noConfigSha).not.toBe(nofile);
    const jobs = (await c.queue.list({ limit: 100 })).jobs.length;
    const builds = (await call('GET', '/v1/builds?limit=100')).json.builds.length;
    const url = `${filtered.url}/src.git`;
    const cases: [unknown, number, string, RegExp][] = [
      [
        { git: url, ref: 'nofile' },
        400,
        'config',
        new RegExp(`${noConfigSha} has no \\.archway\\.yml or \\.travis\\.yml`),
      ],
      [{ git: url, ref: 'no-such-branch' }, 400, 'source.ref', /has no ref 'no-such-branch'/],
      [{ git: url, sha: 'f'.repeat(40) }, 400, 'source.sha', new RegExp(`has no commit ${'f'.repeat(40)}`)],
      [
        { git: `${filtered.url}/no-such-repo.git` },
        400,
        'source.git',
        /cannot fetch HEAD from .*no-such-repo\.git.*not found/,
      ],
      // Nothing listens there (a port of this test's range, left unbound).
      [
        { git: 'http://127.0.0.1:21999/src.git' },
        400,
        'source.git',
        /cannot fetch HEAD .*(connect|Connection refused)/i,
      ],
      [
        { git: 'https://10.1.2.3/owner/repo.git' },
        400,
        'source.git',
        /a private address: it is never fetched from/,
      ],
      // Without blob filters the server sends big.bin too: over the limit, stopped there.
      [
        { git: `${plain.url}/src.git`, ref: 'main' },
        400,
        'source.ref',
        /more than 262144 bytes \(ARCHWAY_CONFIG_FETCH_LIMIT_BYTES\)/,
      ],
    ];
    for (const [source, status, field, message] of cases) {
      const r = await call('POST', '/v1/builds', { source });
      expect({ source, status: r.status, field: r.json.error?.field }).toEqual({ source, status, field });
      expect(r.json.error.message).toMatch(message);
    }
    expect((await c.queue.list({ limit: 100 })).jobs.length).toBe(jobs);
    expect((await call('GET', '/v1/builds?limit=100')).json.builds.length).toBe(builds);
    expect(await scratch()).toEqual([]);
    // The refused host was never asked; the plain server was, and stopped at the limit.
    expect(plain.requests.some((q) => q.startsWith('POST /src.git/git-upload-pack'))).toBe(true);
  }, 120_000);
});

describe('restart of a job submitted alone', () => {
  it('makes a new job of the same spec, linked both ways; a running, restarted-already, secret-holding or unknown job is refused', async () => {
    const submit = (script: string, extra: Record<string, unknown> = {}) =>
      call('POST', '/v1/jobs', {
        arch: 'amd64',
        image: 'busybox',
        script,
        labels: { suite: 'restart' },
        ...extra,
      });
    const first = await submit('echo "run of $(hostname)"');
    expect(first.status).toBe(201);
    const oldId = first.json.job.id as string;
    // While it is queued or running: 409, and nothing is made.
    const slow = await submit('sleep 30');
    const early = await call('POST', `/v1/jobs/${slow.json.job.id}/restart`);
    expect(early.status).toBe(409);
    expect(early.json.error.code).toBe('JOB_NOT_RESTARTABLE');
    expect(early.json.error.message).toMatch(/is still (queued|running)/);
    await c.queue.cancel(slow.json.job.id);
    expect((await c.waitFinal(slow.json.job.id)).state).toBe('canceled');
    expect((await c.waitFinal(oldId)).state).toBe('passed');
    const r = await archway(['restart', oldId]);
    expect(r.exitCode).toBe(0);
    const newId = r.stdout.trim();
    expect(newId).toMatch(/^j[0-9a-f]{24}$/);
    expect(newId).not.toBe(oldId);
    expect(r.stderr).toContain(`restarted ${oldId} as ${newId}`);
    const again = await c.waitFinal(newId);
    expect(again.state).toBe('passed');
    expect(again.spec.script).toEqual(first.json.job.spec.script);
    expect(again.labels).toEqual({ suite: 'restart' });
    const shown = await call('GET', `/v1/jobs/${newId}`);
    expect(shown.json.restartOf).toBe(oldId);
    expect((await call('GET', `/v1/jobs/${oldId}`)).json.restartedBy).toBe(newId);
    const log = await (
      await fetch(`${api.url}/v1/jobs/${newId}/log`, { headers: { authorization: `Bearer ${token}` } })
    ).text();
    expect(log).toContain(`run of ${newId}`);
    // The old run again: 409 naming the newest; the newest restarts fine (a chain).
    const twice = await call('POST', `/v1/jobs/${oldId}/restart`);
    expect(twice.status).toBe(409);
    expect(twice.json.error.message).toContain(`was restarted already, as ${newId}`);
    const third = await call('POST', `/v1/jobs/${newId}/restart`);
    expect(third.status).toBe(202);
    expect(third.json).toMatchObject({ previous: newId, kind: 'job' });
    expect(third.json.build).toBeUndefined();
    expect((await c.waitFinal(third.json.job)).restartOf).toBe(newId);
    // A job that had secrets: their values are gone once it ended, so it is not run without them.
    const secret = await submit('test -n "$TOKEN"', { secrets: { TOKEN: 's3cret' } });
    await c.waitFinal(secret.json.job.id);
    const jobs = (await c.queue.list({ limit: 100 })).jobs.length;
    const refused = await archway(['restart', secret.json.job.id]);
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toMatch(/had secrets, which are not kept/);
    expect((await call('POST', `/v1/jobs/j${'0'.repeat(24)}/restart`)).status).toBe(404);
    expect((await c.queue.list({ limit: 100 })).jobs.length).toBe(jobs);
  }, 120_000);
});
