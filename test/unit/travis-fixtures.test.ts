import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { recipeToolchains } from '../../images/index.ts';
import {
  type BuildEvent,
  buildJobScript,
  ConfigError,
  type ExpandResult,
  expandRepoConfig,
} from '../../webhooks/index.ts';

const dir = join(import.meta.dirname, '../fixtures/travis');
const read = (name: string) => readFileSync(join(dir, name), 'utf8');
const push: BuildEvent = { type: 'push', branch: 'main', repo: 'acme/project' };

function summary(r: ExpandResult) {
  const running = r.jobs.filter((j) => !j.skipped);
  const count = (xs: string[]) =>
    xs.reduce<Record<string, number>>((acc, x) => {
      acc[x] = (acc[x] ?? 0) + 1;
      return acc;
    }, {});
  return {
    runs: r.runs,
    jobs: r.jobs.length,
    arches: count(running.map((j) => j.configArch)),
    skipped: r.jobs.filter((j) => j.skipped).length,
    allowFailure: r.jobs.filter((j) => j.allowFailure).length,
    stages: r.stages,
  };
}

describe('real-world style .travis.yml files', () => {
  it('numpy-style: one include per arch, wheel builders only on cron, tags or [wheel build]', () => {
    const text = read('numpy-style.yml');
    expect(summary(expandRepoConfig(text, push))).toEqual({
      runs: true,
      jobs: 2,
      arches: { ppc64le: 1, s390x: 1 },
      skipped: 0,
      allowFailure: 0,
      stages: ['test'],
    });
    const cron = expandRepoConfig(text, { ...push, type: 'cron' });
    expect(summary(cron).arches).toEqual({ ppc64le: 1, s390x: 1, arm64: 1, 'arm64-graviton2': 1 });
    expect(cron.jobs.map((j) => j.arch)).toEqual(['ppc64le', 's390x', 'arm64', 'arm64']);
    const wheel = expandRepoConfig(text, { ...push, commitMessage: 'BLD: bump\n\n[wheel build]' });
    expect(wheel.jobs).toHaveLength(4);
    const s390x = cron.jobs[1];
    expect(s390x?.env).toEqual([
      'DOWNLOAD_OPENBLAS=1',
      'NPY_USE_BLAS_ILP64=1',
      'ATLAS=None',
      'EXPECT_CPU_FEATURES="VX VXE VXE2"',
    ]);
    expect(s390x?.phases.install).toEqual(['sudo apt update && sudo apt -y --only-upgrade install binutils']);
    expect(s390x?.phases.before_install).toEqual(['./tools/travis-before-install.sh']);
    expect(cron.jobs[2]?.phases.script[0]).toMatch(/^cibuildwheel --output-dir wheelhouse\n/);
    // The graviton2 wheel job's own addons (an alias of the root's list plus one more) replace the root's.
    expect(cron.jobs[3]?.apt).toEqual({
      packages: ['gfortran', 'libgfortran5', 'libatlas-base-dev', 'eatmydata', 'libopenblas-dev'],
      update: false,
      sources: [],
    });
    expect(s390x?.apt?.packages).toEqual(['gfortran', 'libgfortran5', 'libatlas-base-dev', 'eatmydata']);
    expect(cron.ignored.map((i) => i.key).sort()).toEqual(['cache', 'dist', 'git', 'group', 'virt']);
  });

  it('scipy-style: merge keys from an anchor under an unknown key, allow_failures by arch and name', () => {
    const r = expandRepoConfig(read('scipy-style.yml'), push);
    expect(summary(r)).toEqual({
      runs: true,
      jobs: 5,
      arches: { amd64: 1, arm64: 2, ppc64le: 1, s390x: 1 },
      skipped: 0,
      allowFailure: 2,
      stages: ['test'],
    });
    expect(r.fastFinish).toBe(true);
    expect(r.jobs.map((j) => [j.configArch, j.versions.python, j.allowFailure])).toEqual([
      ['amd64', '3.9', false],
      ['arm64', '3.9', false],
      ['ppc64le', '3.9', false],
      ['s390x', '3.9', true],
      ['arm64', '3.10', true],
    ]);
    expect(r.jobs[1]?.env).toEqual([
      'TESTMODE=fast',
      'COVERAGE=',
      'NUMPYSPEC="--pre --upgrade --timeout=60 numpy"',
      'USE_WHEEL=1',
    ]);
    expect(r.jobs[0]?.phases.script).toEqual([
      'python -u runtests.py -g -m $TESTMODE',
      'python -u runtests.py --mode $TESTMODE -- -rfEX -n 3',
    ]);
    expect(r.ignored.map((i) => i.key)).toContain('x-defaults');
  });

  it('openssl-style: os x compiler x env.jobs, excludes, includes (linux-ppc64le, arm64, s390x), allow_failures by os', () => {
    const r = expandRepoConfig(read('openssl-style.yml'), push);
    expect(summary(r)).toEqual({
      runs: true,
      jobs: 12,
      arches: { amd64: 6, arm64: 1, s390x: 1, ppc64le: 1 },
      skipped: 3,
      allowFailure: 1,
      stages: ['test'],
    });
    expect(r.jobs.filter((j) => j.skipped).every((j) => j.os === 'osx' && j.compiler === 'clang')).toBe(true);
    expect(r.jobs.at(-1)).toMatchObject({ arch: 'ppc64le', compiler: 'clang', allowFailure: true });
    expect(r.dropped.filter((d) => d.reason.startsWith('matches jobs.exclude'))).toHaveLength(4);
    expect(r.jobs[0]?.env).toEqual(['CONFIG_OPTS=""', 'DESTDIR="_install"']);
    // Multi-line plain scalars are one command, as YAML folds them.
    expect(r.jobs[0]?.phases.script[0]).toBe(
      'if [ -z "$BUILDONLY" ]; then make_target="test"; else make_target="build_all_generated"; fi',
    );
    expect(expandRepoConfig(read('openssl-style.yml'), { ...push, type: 'cron' }).jobs).toHaveLength(13);
    // addons.apt runs in every linux job (Ubuntu's clang-9 and gcc-5 are asked for as written:
    // the job names them if bookworm has no such package).
    expect(
      r.jobs
        .filter((j) => !j.skipped)
        .every(
          (j) => j.apt?.packages.join(' ') === 'clang-9 gcc-5 gcc-mingw-w64 autoconf automake libtool ccache',
        ),
    ).toBe(true);
    expect(r.ignored.map((i) => i.key)).not.toContain('addons');
  });

  it('numpy-style against the shipped images: python versions the default image does not have are warned about', async () => {
    const r = expandRepoConfig(
      read('numpy-style.yml'),
      { ...push, type: 'cron' },
      { toolchains: await recipeToolchains() },
    );
    expect(r.warnings).toContain(
      'jobs 1.1, 1.2, 1.3, 1.4: python 3.8: image debian-bookworm-build has python3 3.11.2, not 3.8',
    );
  });

  it('rust-style: rust x arch, exclude, nightly allowed to fail and ordered last', () => {
    const r = expandRepoConfig(read('rust-style.yml'), push);
    expect(summary(r)).toEqual({
      runs: true,
      jobs: 11,
      arches: { amd64: 3, arm64: 3, ppc64le: 3, s390x: 2 },
      skipped: 0,
      allowFailure: 4,
      stages: ['test'],
    });
    expect(r.jobs.slice(-4).map((j) => [j.number, j.versions.rust])).toEqual([
      ['1.8', 'nightly'],
      ['1.9', 'nightly'],
      ['1.10', 'nightly'],
      ['1.11', 'nightly'],
    ]);
  });

  it('go-style: declared stages, a conditional release stage, secure globals', () => {
    const r = expandRepoConfig(read('go-style.yml'), push);
    expect(summary(r)).toEqual({
      runs: true,
      jobs: 13,
      arches: { amd64: 4, arm64: 3, ppc64le: 3, s390x: 3 },
      skipped: 0,
      allowFailure: 4,
      stages: ['lint', 'test'],
    });
    expect(r.jobs[0]).toMatchObject({ stage: 'lint', phases: { script: ['make lint'] } });
    expect(r.jobs[1]?.env.slice(0, 2)).toEqual(['GO111MODULE=on', 'CGO_ENABLED=0']);
    expect(r.jobs[1]?.env[2]).toMatch(/^\[secure:[0-9a-f]{12}\]$/);
    const tag = expandRepoConfig(read('go-style.yml'), { type: 'push', branch: 'v1.2.0', tag: 'v1.2.0' });
    expect(tag.stages).toEqual(['lint', 'test', 'release']);
    expect(tag.jobs.at(-1)).toMatchObject({ stage: 'release', number: '1.14', phases: { script: [] } });
  });

  it('node-anchors: <<: *a, <<: [*a, *b], several << in one entry', () => {
    const r = expandRepoConfig(read('node-anchors.yml'), push);
    expect(
      r.jobs.map((j) => [j.configArch, j.versions.node_js, j.phases.install, j.phases.script, j.env]),
    ).toEqual([
      ['amd64', '18', ['npm ci'], ['npm test'], []],
      ['arm64', '20', ['npm ci'], ['npm test'], []],
      ['s390x', '20', ['npm ci'], ['npm test'], ['NODE_OPTIONS=--max-old-space-size=2048']],
    ]);
    const tag = expandRepoConfig(read('node-anchors.yml'), { type: 'push', tag: 'v2.0.0', branch: 'v2.0.0' });
    expect(tag.stages).toEqual(['test', 'release']);
    expect(tag.jobs).toHaveLength(4);
    expect(tag.ignored.find((i) => i.key === 'deploy')?.paths).toEqual(['jobs.include[3].deploy']);
  });

  it('python-tox: matrix alias, env.matrix, exclude by arch and env, allow_failures by env, branches', () => {
    const text = read('python-tox.yml');
    const r = expandRepoConfig(text, push);
    expect(summary(r)).toEqual({
      runs: true,
      jobs: 5,
      arches: { arm64: 2, ppc64le: 2, s390x: 1 },
      skipped: 0,
      allowFailure: 2,
      stages: ['test'],
    });
    expect(expandRepoConfig(text, { ...push, branch: 'feature' })).toMatchObject({ runs: false, jobs: [] });
    expect(expandRepoConfig(text, { type: 'push', branch: 'v1.2.3', tag: 'v1.2.3' }).runs).toBe(true);
    expect(r.jobs[0]?.phases.after_success).toEqual([
      'bash <(curl -s https://codecov.io/bash) -F "$TRAVIS_CPU_ARCH"',
    ]);
  });

  it('cpp-compilers: os x arch x compiler x env; osx and windows jobs collapse and are skipped', () => {
    const r = expandRepoConfig(read('cpp-compilers.yml'), push);
    expect(summary(r)).toEqual({
      runs: true,
      jobs: 16,
      arches: { amd64: 4, arm64: 4, ppc64le: 1, s390x: 1 },
      skipped: 6,
      allowFailure: 0,
      stages: ['test'],
    });
    expect(r.jobs.find((j) => j.name === 'big-endian')).toMatchObject({ arch: 's390x', compiler: 'gcc' });
  });

  it('bad-arch: an unknown arch is a config error naming the value and its line', () => {
    let err: unknown;
    try {
      expandRepoConfig(read('bad-arch.yml'), push);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect(err).toMatchObject({
      code: 'CONFIG_INVALID',
      line: 7,
      column: 13,
      keyPath: 'jobs.include[2].arch',
      excerpt: '    - arch: riscv64',
    });
    expect((err as ConfigError).message).toMatch(
      /^line 7, column 13: jobs\.include\[2\]\.arch: unknown arch 'riscv64'/,
    );
  });

  it.each([
    'numpy-style.yml',
    'scipy-style.yml',
    'openssl-style.yml',
    'rust-style.yml',
    'go-style.yml',
    'node-anchors.yml',
    'python-tox.yml',
    'cpp-compilers.yml',
  ])('%s: every job script builds', (name) => {
    for (const job of expandRepoConfig(read(name), { ...push, type: 'cron' }).jobs) {
      const script = buildJobScript(job, { event: push, jobId: `job-${job.number}` });
      expect(script).toContain(`export TRAVIS_JOB_NUMBER='${job.number}'`);
    }
  });
});
