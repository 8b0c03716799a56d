import { describe, expect, it } from 'vitest';
import {
  type BuildEvent,
  ConfigError,
  type ExpandedJob,
  type ExpandResult,
  expandRepoConfig,
} from '../../webhooks/index.ts';

const push: BuildEvent = { type: 'push', branch: 'master', repo: 'acme/widget' };

function expand(yaml: string, event: BuildEvent = push): ExpandResult {
  return expandRepoConfig(yaml, event);
}

/** The parts of a job these tests look at, in a compact form. */
function row(j: ExpandedJob): Record<string, unknown> {
  const r: Record<string, unknown> = { n: j.number };
  if (j.os !== 'linux') r.os = j.os;
  if (j.configArch !== 'amd64') r.arch = j.configArch;
  for (const [k, v] of Object.entries(j.versions)) r[k] = v;
  if (j.compiler !== undefined) r.compiler = j.compiler;
  if (j.env.length > 0) r.env = j.env.join(' ');
  if (j.stage !== 'test') r.stage = j.stage;
  if (j.name !== undefined) r.name = j.name;
  if (j.allowFailure) r.allowFailure = true;
  if (j.skipped) r.skipped = true;
  return r;
}

function rows(yaml: string, event: BuildEvent = push): Record<string, unknown>[] {
  return expand(yaml, event).jobs.map(row);
}

describe('matrix expansion: keys', () => {
  it('a config with no expansion key is one job on amd64 linux (Travis defaults)', () => {
    const r = expand('script: make');
    expect(r.jobs.map(row)).toEqual([{ n: '1.1' }]);
    expect(r.jobs[0]).toMatchObject({
      os: 'linux',
      arch: 'amd64',
      language: 'ruby',
      image: 'debian-bookworm-build',
    });
  });

  it('an empty config is one default job', () => {
    expect(rows('')).toEqual([{ n: '1.1' }]);
  });

  it('multiplies os, arch, the version key and env.jobs, env.jobs varying fastest', () => {
    expect(
      rows(`
language: python
env: [A=1, A=2]
python: ['3.9', '3.10']
arch: [amd64, arm64]
`),
    ).toEqual([
      { n: '1.1', python: '3.9', env: 'A=1' },
      { n: '1.2', python: '3.9', env: 'A=2' },
      { n: '1.3', python: '3.10', env: 'A=1' },
      { n: '1.4', python: '3.10', env: 'A=2' },
      { n: '1.5', arch: 'arm64', python: '3.9', env: 'A=1' },
      { n: '1.6', arch: 'arm64', python: '3.9', env: 'A=2' },
      { n: '1.7', arch: 'arm64', python: '3.10', env: 'A=1' },
      { n: '1.8', arch: 'arm64', python: '3.10', env: 'A=2' },
    ]);
  });

  it.each([
    ['go', 'go: [1.21.x, 1.22.x]', 'go', ['1.21.x', '1.22.x']],
    ['rust', 'rust: [stable, nightly]', 'rust', ['stable', 'nightly']],
    ['node_js', 'node_js: [18, 20]', 'node_js', ['18', '20']],
    ['ruby', 'rvm: [3.2, 3.3]', 'rvm', ['3.2', '3.3']],
    ['ruby', 'ruby: [3.2, 3.3]', 'rvm', ['3.2', '3.3']],
    ['php', 'php: [8.2, 8.3]', 'php', ['8.2', '8.3']],
    ['java', 'jdk: [openjdk11, openjdk17]', 'jdk', ['openjdk11', 'openjdk17']],
  ])('language %s expands on its version key (%s)', (language, line, key, values) => {
    const jobs = expand(`language: ${language}\n${line}\nscript: true`).jobs;
    expect(jobs.map((j) => j.versions[key])).toEqual(values);
    expect(jobs.map((j) => j.version)).toEqual(values.map((value) => ({ key, value })));
  });

  it('a version key of another language does not expand, and is listed as ignored', () => {
    const r = expand('language: c\npython: [3.7, 3.8]\nscript: make');
    expect(r.jobs.map(row)).toEqual([{ n: '1.1' }]);
    expect(r.ignored).toContainEqual({
      key: 'python',
      reason: 'not a version key of language c',
      paths: ['python'],
    });
  });

  it('compiler expands for c and cpp only, and sets CC/CXX', () => {
    expect(rows('language: cpp\ncompiler: [gcc, clang]\nscript: make')).toEqual([
      { n: '1.1', compiler: 'gcc' },
      { n: '1.2', compiler: 'clang' },
    ]);
    const r = expand('language: python\ncompiler: [gcc, clang]\nscript: make');
    expect(r.jobs).toHaveLength(1);
    expect(r.ignored.map((i) => i.key)).toEqual(['compiler']);
  });

  it('dist is not an expansion key: a list of dists is not a matrix', () => {
    expect(rows('dist: focal\nscript: make')).toEqual([{ n: '1.1' }]);
    const r = expand('dist: [focal, jammy]\nscript: make');
    expect(r.jobs).toHaveLength(1);
    expect(r.ignored.map((i) => i.key)).toContain('dist');
  });

  it('env forms: a bare list, env.jobs, env.matrix (alias), a string, a mapping', () => {
    expect(rows('env: [A=1, A=2]').map((r) => r.env)).toEqual(['A=1', 'A=2']);
    expect(rows('env:\n  jobs: [A=1, A=2]').map((r) => r.env)).toEqual(['A=1', 'A=2']);
    expect(rows('env:\n  matrix: [A=1, A=2]').map((r) => r.env)).toEqual(['A=1', 'A=2']);
    expect(rows('env: A=1 B="two words"').map((r) => r.env)).toEqual(['A=1 B="two words"']);
    expect(rows('env:\n  jobs:\n    - A: 1\n      B: two words').map((r) => r.env)).toEqual([
      'A=1 B="two words"',
    ]);
  });

  it('env.global is prepended to every job, matrix or included', () => {
    expect(
      rows(`
env:
  global: [G=1, H=2]
  jobs: [A=1, A=2]
jobs:
  include:
    - env: B=1
`),
    ).toEqual([
      { n: '1.1', env: 'G=1 H=2 A=1' },
      { n: '1.2', env: 'G=1 H=2 A=2' },
      { n: '1.3', env: 'G=1 H=2 B=1' },
    ]);
  });

  it('a job variable that repeats a global one stays after it (it overrides in the shell)', () => {
    expect(rows('env:\n  global: [ONE=one]\njobs:\n  include:\n    - env: ONE=')).toEqual([
      { n: '1.1', env: 'ONE=one ONE=' },
    ]);
  });

  it('a null env is no env', () => {
    expect(rows('env:\nrvm: [2.2, 2.3]\njobs:\n  include:\n    - rvm: 1.8.7\n      env: FOO=foo')).toEqual([
      { n: '1.1', rvm: '2.2' },
      { n: '1.2', rvm: '2.3' },
      { n: '1.3', rvm: '1.8.7', env: 'FOO=foo' },
    ]);
  });

  it('secure variables become named placeholders, never decrypted', () => {
    const j = expand('env:\n  global:\n    - secure: abcdef==\n    - PLAIN=1').jobs[0] as ExpandedJob;
    expect(j.env[0]).toMatch(/^\[secure:[0-9a-f]{12}\]$/);
    expect(j.env[1]).toBe('PLAIN=1');
    expect(JSON.stringify(j.env)).not.toContain('abcdef==');
  });
});

describe('matrix expansion: jobs.include', () => {
  it('jobs and its alias matrix; a bare list means include; a single mapping is a list of one', () => {
    const expected = [{ n: '1.1', arch: 'arm64' }];
    expect(rows('jobs:\n  include:\n    - arch: arm64')).toEqual(expected);
    expect(rows('matrix:\n  include:\n    - arch: arm64')).toEqual(expected);
    expect(rows('jobs:\n  - arch: arm64')).toEqual(expected);
    expect(rows('jobs:\n  include:\n    arch: arm64')).toEqual(expected);
  });

  it('when both matrix and jobs are given, matrix is used, with a warning', () => {
    const r = expand('jobs:\n  include: [{arch: arm64}]\nmatrix:\n  include: [{arch: s390x}]');
    expect(r.jobs.map(row)).toEqual([{ n: '1.1', arch: 's390x' }]);
    expect(r.warnings).toContain('both matrix and jobs are given; matrix is used (as Travis does)');
  });

  it('include entries inherit the first value of each root expansion key', () => {
    expect(
      rows(`
language: python
python: ['3.9', '3.10']
arch: [ppc64le, s390x]
jobs:
  include:
    - name: lint
    - python: '3.12'
      arch: arm64
`),
    ).toEqual([
      { n: '1.1', arch: 'ppc64le', python: '3.9' },
      { n: '1.2', arch: 'ppc64le', python: '3.10' },
      { n: '1.3', arch: 's390x', python: '3.9' },
      { n: '1.4', arch: 's390x', python: '3.10' },
      { n: '1.5', arch: 'ppc64le', python: '3.9', name: 'lint' },
      { n: '1.6', arch: 'arm64', python: '3.12' },
    ]);
  });

  it('include entries without env inherit the first env.jobs entry; with env (even empty) they do not', () => {
    expect(
      rows(`
env:
  global: FOO=foo
  jobs: [BAR=bar, BAR=baz]
jobs:
  include:
    - name: one
    - name: two
      env: X=1
    - name: three
      env: {}
`),
    ).toEqual([
      { n: '1.1', env: 'FOO=foo BAR=bar' },
      { n: '1.2', env: 'FOO=foo BAR=baz' },
      { n: '1.3', env: 'FOO=foo BAR=bar', name: 'one' },
      { n: '1.4', env: 'FOO=foo X=1', name: 'two' },
      { n: '1.5', env: 'FOO=foo', name: 'three' },
    ]);
  });

  it('the root job does not run when every root expansion key has one value and include is not empty', () => {
    const r = expand(`
language: python
python: '3.11'
os: linux
jobs:
  include:
    - arch: arm64
    - arch: ppc64le
`);
    expect(r.jobs.map(row)).toEqual([
      { n: '1.1', arch: 'arm64', python: '3.11' },
      { n: '1.2', arch: 'ppc64le', python: '3.11' },
    ]);
    expect(r.dropped).toEqual([
      {
        job: 'matrix: os linux, python 3.11',
        reason:
          'the root job does not run: every expansion key at the root has one value and jobs.include is not empty (as Travis does)',
      },
    ]);
  });

  it('the root jobs run when a root expansion key has several values', () => {
    expect(rows('os: [linux, osx]\njobs:\n  include:\n    - env: FOO=foo')).toEqual([
      { n: '1.1' },
      { n: '1.2', os: 'osx', skipped: true },
      { n: '1.3', env: 'FOO=foo' },
    ]);
  });

  it('with only include, there is no root job', () => {
    const r = expand('language: rust\nscript: cargo test\njobs:\n  include:\n    - env: FOO=foo');
    expect(r.jobs.map(row)).toEqual([{ n: '1.1', env: 'FOO=foo' }]);
    expect(r.dropped).toEqual([
      { job: 'matrix', reason: expect.stringMatching(/^the root makes no job of its own/) },
    ]);
  });

  it('include entries take the root phases and other shared keys unless they set their own', () => {
    const r = expand(`
language: shell
image: debian-bookworm
install: ./install.sh
script: ./test.sh
jobs:
  include:
    - name: a
    - name: b
      script: ./other.sh
      image: busybox
`);
    expect(r.jobs.map((j) => [j.name, j.image, j.phases.install, j.phases.script])).toEqual([
      ['a', 'debian-bookworm', ['./install.sh'], ['./test.sh']],
      ['b', 'busybox', ['./install.sh'], ['./other.sh']],
    ]);
  });

  it('an include entry is one job: several arches in one entry is an error with its line', () => {
    let err: unknown;
    try {
      expand('jobs:\n  include:\n    - name: x\n      arch: [amd64, arm64]\n');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).line).toBe(4);
    expect((err as ConfigError).keyPath).toBe('jobs.include[0].arch');
    expect((err as ConfigError).message).toMatch(/takes one arch, got amd64, arm64/);
  });

  it('a one-item arch list in an include entry is fine', () => {
    expect(rows('jobs:\n  include:\n    - arch: [arm64]')).toEqual([{ n: '1.1', arch: 'arm64' }]);
  });

  it('null include items are dropped and nested include lists are flattened', () => {
    expect(
      rows(`
_arm: &arm
  - arch: arm64
  - arch: arm64-graviton2
jobs:
  include:
    -
    - *arm
    - arch: s390x
`),
    ).toEqual([
      { n: '1.1', arch: 'arm64' },
      { n: '1.2', arch: 'arm64-graviton2' },
      { n: '1.3', arch: 's390x' },
    ]);
  });
});

describe('matrix expansion: exclude, duplicates, unsupported keys', () => {
  it('jobs.exclude removes the jobs matching all its keys', () => {
    expect(
      rows(`
env: [FOO=foo, BAR=bar]
rvm: ['2.2', '2.3']
jobs:
  exclude:
    - env: BAR=bar
      rvm: '2.3'
`),
    ).toEqual([
      { n: '1.1', rvm: '2.2', env: 'FOO=foo' },
      { n: '1.2', rvm: '2.2', env: 'BAR=bar' },
      { n: '1.3', rvm: '2.3', env: 'FOO=foo' },
    ]);
  });

  it('exclude can name arch by an alias, and leaves out env.global when matching env', () => {
    const r = expand(`
language: python
python: ['3.7']
arch: [amd64, arm64]
env:
  global: [FOO=foo]
  jobs: [ONE=one, TWO=two]
jobs:
  exclude:
    - env: TWO=two
      arch: aarch64
`);
    expect(r.jobs.map(row)).toEqual([
      { n: '1.1', python: '3.7', env: 'FOO=foo ONE=one' },
      { n: '1.2', python: '3.7', env: 'FOO=foo TWO=two' },
      { n: '1.3', arch: 'arm64', python: '3.7', env: 'FOO=foo ONE=one' },
    ]);
    expect(r.dropped).toEqual([
      { job: 'matrix: arch arm64, python 3.7, env TWO=two', reason: 'matches jobs.exclude[0]' },
    ]);
  });

  it('exclude has its own if:', () => {
    const yaml = `
env: [FOO=one, FOO=two]
jobs:
  exclude:
    - env: FOO=one
      if: branch = master
`;
    expect(rows(yaml).map((r) => r.env)).toEqual(['FOO=two']);
    expect(rows(yaml, { type: 'push', branch: 'dev' }).map((r) => r.env)).toEqual(['FOO=one', 'FOO=two']);
    expect(
      rows('env: [FOO=one, FOO=two]\njobs:\n  exclude:\n    - if: env(FOO) = two').map((r) => r.env),
    ).toEqual(['FOO=one']);
  });

  it('excluding every job leaves no job', () => {
    expect(
      rows(
        'language: scala\nscala: 2.11.8\njdk: oraclejdk8\njobs:\n  exclude:\n    - scala: 2.11.8\n      jdk: oraclejdk8',
      ),
    ).toEqual([]);
  });

  it('identical jobs collapse into one', () => {
    const r = expand(`
env: FOO=foo
rvm: ['2.2']
jobs:
  include:
    - env: FOO=foo
      rvm: '2.2'
    - env: FOO=foo
      rvm: '2.2'
`);
    expect(r.jobs.map(row)).toEqual([{ n: '1.1', rvm: '2.2', env: 'FOO=foo' }]);
    expect(r.dropped.map((d) => d.reason)).toEqual([
      expect.stringMatching(/root job does not run/),
      expect.stringMatching(/^identical to an earlier job/),
    ]);
  });

  it('arch does not apply to osx or windows jobs: they collapse into one skipped job each', () => {
    expect(rows('os: [linux, osx, windows]\narch: [amd64, arm64]')).toEqual([
      { n: '1.1' },
      { n: '1.2', arch: 'arm64' },
      { n: '1.3', os: 'osx', skipped: true },
      { n: '1.4', os: 'windows', skipped: true },
    ]);
  });

  it('a key the language does not support leaves no bogus job', () => {
    expect(rows('language: shell\ncompiler: [gcc, clang]\njobs:\n  include:\n    - env: ONE=one')).toEqual([
      { n: '1.1', env: 'ONE=one' },
    ]);
  });
});

describe('matrix expansion: os and arch', () => {
  it.each([
    ['x86_64', 'amd64', 'amd64'],
    ['x64', 'amd64', 'amd64'],
    ['aarch64', 'arm64', 'arm64'],
    ['ARM64', 'arm64', 'arm64'],
    ['arm64-graviton2', 'arm64-graviton2', 'arm64'],
    ['ppc64el', 'ppc64le', 'ppc64le'],
    ['power', 'ppc64le', 'ppc64le'],
    ['ppc64', 'ppc64le', 'ppc64le'],
    ['s390x', 's390x', 's390x'],
  ])('arch %s is %s, in the %s pool', (value, configArch, pool) => {
    const j = expand(`arch: ${value}`).jobs[0] as ExpandedJob;
    expect([j.configArch, j.arch]).toEqual([configArch, pool]);
  });

  it.each(['i386', 'armhf', 'riscv64', 'sparc'])(
    'arch %s is a config error naming the value and its line',
    (value) => {
      let err: unknown;
      try {
        expand(`language: c\narch:\n  - amd64\n  - ${value}\n`);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      const e = err as ConfigError;
      expect(e.code).toBe('CONFIG_INVALID');
      expect(e.line).toBe(4);
      expect(e.column).toBe(5);
      expect(e.keyPath).toBe('arch[1]');
      expect(e.message).toContain(`unknown arch '${value}'`);
      expect(e.excerpt).toBe(`  - ${value}`);
    },
  );

  it('an unknown arch in an include whose if: is false is still an error', () => {
    expect(() => expand('jobs:\n  include:\n    - arch: mips\n      if: branch = never\n')).toThrow(
      /line 3, column 13: jobs\.include\[0\]\.arch: unknown arch 'mips'/,
    );
  });

  it('os aliases, and os: linux-ppc64le (old Travis) is linux on ppc64le', () => {
    expect(rows('os: [ubuntu, macos, win, bsd]')).toEqual([
      { n: '1.1' },
      { n: '1.2', os: 'osx', skipped: true },
      { n: '1.3', os: 'windows', skipped: true },
      { n: '1.4', os: 'freebsd', skipped: true },
    ]);
    expect(rows('os: linux-ppc64le')).toEqual([{ n: '1.1', arch: 'ppc64le' }]);
  });

  it('jobs that cannot run are returned skipped with the reason', () => {
    const j = expand('os: osx').jobs[0] as ExpandedJob;
    expect(j.skipped).toBe(true);
    expect(j.skipReason).toBe('os: osx jobs are not run: archway runs linux jobs only');
  });

  it('language objective-c runs on osx unless os says otherwise', () => {
    expect(rows('language: objective-c')).toEqual([{ n: '1.1', os: 'osx', skipped: true }]);
  });

  it('an unknown os is a config error', () => {
    expect(() => expand('os: plan9')).toThrow(/line 1, column 5: os: unknown os 'plan9'/);
  });
});

describe('matrix expansion: conditions', () => {
  const yaml = `
jobs:
  include:
    - env: FOO=one
    - env: FOO=two
      if: branch = master
    - env: FOO=three
      if: type = pull_request AND fork = true
    - env: FOO=four
      if: tag =~ ^v\\d
    - env: FOO=five
      if: env(FOO) = five AND commit_message !~ /skip five/
`;
  it.each<[string, BuildEvent, string[]]>([
    ['push to master', { type: 'push', branch: 'master' }, ['FOO=one', 'FOO=two', 'FOO=five']],
    ['push to dev', { type: 'push', branch: 'dev' }, ['FOO=one', 'FOO=five']],
    [
      'fork PR',
      { type: 'pull_request', branch: 'master', fork: true },
      ['FOO=one', 'FOO=two', 'FOO=three', 'FOO=five'],
    ],
    ['tag v1.2', { type: 'push', branch: 'v1.2', tag: 'v1.2' }, ['FOO=one', 'FOO=four', 'FOO=five']],
    ['skip five', { type: 'push', branch: 'dev', commitMessage: 'x\nskip five' }, ['FOO=one']],
  ])('%s', (_name, event, env) => {
    expect(rows(yaml, event).map((r) => r.env)).toEqual(env);
  });

  it('jobs whose if: is false are listed as dropped with the condition', () => {
    const r = expand(yaml, { type: 'push', branch: 'dev' });
    expect(r.dropped).toContainEqual({
      job: 'jobs.include[1]: env FOO=two',
      reason: 'if: branch = master is false',
    });
  });

  it('env(NAME) sees env.global too', () => {
    expect(
      rows(
        'env:\n  global: [ONE=one]\njobs:\n  include:\n    - name: a\n      if: env(ONE) IS present\n    - name: b\n      if: env(ONE) = two',
      ),
    ).toEqual([{ n: '1.1', env: 'ONE=one', name: 'a' }]);
  });

  it("conditions see the job's os and language", () => {
    expect(
      rows('os: [linux, osx]\njobs:\n  include:\n    - os: osx\n      name: mac\n      if: os = osx').map(
        (r) => r.n,
      ),
    ).toHaveLength(3);
  });

  it('the root if: decides whether there is a build', () => {
    const r = expand('if: branch = master\nscript: make', { type: 'push', branch: 'dev' });
    expect(r).toMatchObject({ runs: false, reason: "the build's if: branch = master is false", jobs: [] });
    expect(expand('if: branch = master\nscript: make').runs).toBe(true);
  });

  it('branches: only / except (names and /regexes/) decide whether there is a build', () => {
    const only = 'branches:\n  only:\n    - master\n    - /^release-.*$/\nscript: make';
    expect(expand(only, { type: 'push', branch: 'release-1' }).runs).toBe(true);
    expect(expand(only, { type: 'push', branch: 'dev' })).toMatchObject({
      runs: false,
      reason: 'branch dev: not in branches.only (master, /^release-.*$/)',
    });
    expect(expand('branches: [master]', { type: 'push', branch: 'dev' }).runs).toBe(false);
    expect(expand('branches:\n  except: [gh-pages]', { type: 'push', branch: 'gh-pages' }).runs).toBe(false);
  });

  it('a condition that does not parse is a config error with its line', () => {
    expect(() => expand('script: make\njobs:\n  include:\n    - if: branch IN (a, b\n')).toThrow(
      /line 4, column 11: jobs\.include\[0\]\.if: cannot parse condition/,
    );
  });
});

describe('matrix expansion: stages', () => {
  it('jobs without a stage are in test; an include without stage takes the previous entry stage', () => {
    const r = expand(`
env: [ONE=one, TWO=two]
jobs:
  include:
    - stage: one
      env: ONE=one
    - env: TWO=two
`);
    expect(r.jobs.map(row)).toEqual([
      { n: '1.1', env: 'ONE=one' },
      { n: '1.2', env: 'TWO=two' },
      { n: '1.3', env: 'ONE=one', stage: 'one' },
      { n: '1.4', env: 'TWO=two', stage: 'one' },
    ]);
    expect(r.stages).toEqual(['test', 'one']);
  });

  it('declared stages set the order; undeclared ones follow; names match whatever their case', () => {
    const r = expand(`
stages: [lint, Test, deploy]
jobs:
  include:
    - stage: deploy
      name: d
    - stage: extra
      name: x
    - stage: test
      name: t
    - stage: lint
      name: l
`);
    expect(r.stages).toEqual(['lint', 'Test', 'deploy', 'extra']);
    expect(r.jobs.map((j) => [j.number, j.name, j.stage])).toEqual([
      ['1.1', 'l', 'lint'],
      ['1.2', 't', 'Test'],
      ['1.3', 'd', 'deploy'],
      ['1.4', 'x', 'extra'],
    ]);
  });

  it('conditional stages: a stage whose if: is false does not run, nor do its jobs', () => {
    const yaml = `
stages:
  - test
  - name: deploy
    if: branch = master AND type = push
script: make
jobs:
  include:
    - stage: test
    - stage: deploy
      script: ./deploy.sh
`;
    expect(expand(yaml).stages).toEqual(['test', 'deploy']);
    const pr = expand(yaml, { type: 'pull_request', branch: 'master' });
    expect(pr.stages).toEqual(['test']);
    expect(pr.jobs.map(row)).toEqual([{ n: '1.1' }]);
    expect(pr.dropped).toContainEqual({
      job: 'jobs.include[1]: stage deploy',
      reason: 'stage deploy does not run: its if: branch = master AND type = push is false',
    });
  });
});

describe('matrix expansion: allow_failures and fast_finish', () => {
  it('allow_failures matches by keys, by env, by name, and an include entry may say allow_failure', () => {
    const r = expand(`
language: python
python: ['3.11', '3.12', 'nightly']
env:
  global: [G=1]
  jobs: [A=1, A=2]
jobs:
  fast_finish: true
  include:
    - name: docs
      python: '3.12'
      allow_failure: true
    - name: lint
  allow_failures:
    - python: nightly
    - env: A=2
      python: '3.11'
    - name: lint
`);
    expect(r.fastFinish).toBe(true);
    expect(
      r.jobs.map((j) => [j.number, j.versions.python, j.env.join(' '), j.name ?? '', j.allowFailure]),
    ).toEqual([
      ['1.1', '3.11', 'G=1 A=1', '', false],
      ['1.2', '3.12', 'G=1 A=1', '', false],
      ['1.3', '3.12', 'G=1 A=2', '', false],
      ['1.4', '3.11', 'G=1 A=2', '', true],
      ['1.5', 'nightly', 'G=1 A=1', '', true],
      ['1.6', 'nightly', 'G=1 A=2', '', true],
      ['1.7', '3.12', 'G=1 A=1', 'docs', true],
      ['1.8', '3.11', 'G=1 A=1', 'lint', true],
    ]);
  });

  it('allow_failures may name an arch, and has its own if:', () => {
    const yaml =
      'arch: [amd64, s390x]\njobs:\n  allow_failures:\n    - arch: s390x\n      if: branch != master';
    expect(expand(yaml).jobs.map((j) => j.allowFailure)).toEqual([false, false]);
    expect(expand(yaml, { type: 'push', branch: 'dev' }).jobs.map((j) => j.allowFailure)).toEqual([
      false,
      true,
    ]);
  });

  it('fast_failure is an alias of fast_finish; the default is false', () => {
    expect(expand('jobs:\n  fast_failure: true').fastFinish).toBe(true);
    expect(expand('script: make').fastFinish).toBe(false);
  });
});

describe('matrix expansion: phases, images and ignored keys', () => {
  it('phases: strings, lists, nested lists from aliases, null items, skip, and null phases', () => {
    const j = expand(`
language: python
_common: &common
  - echo one
  - echo two
before_install:
install: skip
before_script: [*common, null, echo three]
script:
  - pytest
after_success: true
`).jobs[0] as ExpandedJob;
    expect(j.phases).toEqual({
      before_install: [],
      install: [],
      before_script: ['echo one', 'echo two', 'echo three'],
      script: ['pytest'],
      after_success: ['true'],
      after_failure: [],
      after_script: [],
    });
  });

  it('language defaults apply to missing phases; without a known default script the job fails saying so', () => {
    const rust = expand('language: rust').jobs[0] as ExpandedJob;
    expect(rust.phases.script).toEqual(['cargo build --verbose', 'cargo test --verbose']);
    const py = expand('language: python').jobs[0] as ExpandedJob;
    expect(py.phases.script).toEqual([expect.stringMatching(/no script: for language python.*; false$/)]);
    expect((expand('language: minimal').jobs[0] as ExpandedJob).phases.script).toEqual([]);
  });

  it('image: is an archway extension, checked as an image name', () => {
    expect((expand('image: busybox').jobs[0] as ExpandedJob).image).toBe('busybox');
    expect(() => expand('script: x\nimage: ../etc')).toThrow(
      /line 2, column 8: image: invalid image '\.\.\/etc': an image name is/,
    );
  });

  it('lists keys archway does not run, once per key, with every place; addons.apt is not one of them', () => {
    const r = expand(`
dist: focal
sudo: required
group: edge
virt: lxd
services: [docker]
cache: pip
notifications:
  email: false
deploy:
  provider: pages
  on:
    branch: master
addons:
  apt:
    packages: [libssl-dev]
x-anchors: &x {a: 1}
jobs:
  include:
    - addons:
        apt:
          packages: [[gfortran, libopenblas-dev], null]
`);
    const byKey = Object.fromEntries(r.ignored.map((i) => [i.key, i]));
    expect(Object.keys(byKey).sort()).toEqual(
      ['cache', 'deploy', 'dist', 'group', 'notifications', 'services', 'sudo', 'virt', 'x-anchors'].sort(),
    );
    // The include entry's addons replace the root's (the root makes no job of its own here).
    expect(r.jobs.map((j) => j.apt?.packages)).toEqual([['gfortran', 'libopenblas-dev']]);
    expect(byKey['x-anchors']?.reason).toBe('not a Travis key; ignored');
  });

  it('numbers jobs with the build number', () => {
    expect(
      expandRepoConfig('arch: [amd64, arm64]', push, { buildNumber: 42 }).jobs.map((j) => j.number),
    ).toEqual(['42.1', '42.2']);
  });

  it('refuses a matrix larger than a build may be', () => {
    const values = Array.from({ length: 11 }, (_, i) => `V=${i}`).join(', ');
    expect(() =>
      expand(`language: python\npython: [${values}]\nenv: [${values}]\narch: [amd64, arm64]`),
    ).toThrow(/makes 242 jobs; a build has at most 200/);
    const many = Array.from({ length: 40 }, (_, i) => `'${i}'`).join(', ');
    expect(() =>
      expand(`language: python\npython: [${many}]\nenv: [${values}]\nos: [linux, osx, windows]`),
    ).toThrow(/the matrix expands to 1320 jobs/);
  });
});
