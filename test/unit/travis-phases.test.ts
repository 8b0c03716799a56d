import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type BuildEvent,
  buildJobScript,
  type ExpandedJob,
  expandRepoConfig,
  JOB_EXIT,
  travisEnv,
} from '../../webhooks/index.ts';

const push: BuildEvent = { type: 'push', branch: 'main', repo: 'acme/widget', commit: 'a'.repeat(40) };

function job(yaml: string, event: BuildEvent = push): ExpandedJob {
  const j = expandRepoConfig(yaml, event).jobs[0];
  if (!j) throw new Error('no job');
  return j;
}

const SHELLS: [string, string[]][] = [
  ['dash (/bin/sh)', ['/bin/sh']],
  ['busybox sh', ['/bin/busybox', 'sh']],
  ['bash', ['/bin/bash']],
];

describe.each(SHELLS.filter(([, argv]) => existsSync(argv[0] as string)))(
  'job script under %s',
  (_name, argv) => {
    let dir: string;
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'archway-phases-'));
    });
    afterAll(() => {
      rmSync(dir, { recursive: true, force: true });
    });

    function run(
      yaml: string,
      event: BuildEvent = push,
      buildDir?: string,
    ): { code: number | null; out: string } {
      const script = buildJobScript(job(yaml, event), {
        event,
        jobId: 'job-1',
        buildDir: buildDir ?? dir,
        preferBash: false,
      });
      const [cmd, ...args] = argv as [string, ...string[]];
      const r = spawnSync(cmd, [...args, '-c', script], {
        cwd: dir,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir },
        encoding: 'utf8',
        timeout: 30_000,
      });
      return { code: r.status, out: `${r.stdout}${r.stderr}` };
    }

    it('runs all phases in one shell session: a cd or an export holds in the next phase', () => {
      const r = run(`
language: shell
before_install:
  - mkdir -p sub
  - cd sub
install: export FOO=bar; BAZ=qux
before_script: echo "in $(basename "$PWD")"
script:
  - echo "FOO=$FOO BAZ=$BAZ"
  - test "$(basename "$PWD")" = sub
`);
      expect(r.code).toBe(JOB_EXIT.passed);
      expect(r.out).toContain('in sub');
      expect(r.out).toContain('FOO=bar BAZ=qux');
      expect(r.out).toContain('Done. Your build exited with 0.');
    });

    it('a failing install command stops the job as errored (exit 2); nothing after it runs', () => {
      const r = run(`
language: shell
install:
  - echo first
  - sh -c 'exit 3'
  - echo never-install
script: echo never-script
after_script: echo never-after
`);
      expect(r.code).toBe(JOB_EXIT.errored);
      expect(r.out).toContain('first');
      expect(r.out).toContain('The command "sh -c \'exit 3\'" failed and exited with 3 during install.');
      expect(r.out).toContain('Your build has been stopped.');
      expect(r.out).not.toMatch(/^never-/m);
      expect(r.out).toContain('travis_fold:end:install');
    });

    it.each(['before_install', 'before_script'])('a failing %s command errors the job too', (phase) => {
      const r = run(`language: shell\n${phase}: 'false'\nscript: echo never-script`);
      expect(r.code).toBe(JOB_EXIT.errored);
      expect(r.out).toContain(`during ${phase}.`);
      expect(r.out).not.toMatch(/^never-script/m);
    });

    it('every script command runs even after one fails, and the job fails', () => {
      const r = run(`
language: shell
script:
  - echo one
  - sh -c 'exit 4'
  - echo three
after_success: echo ran-after-success
after_failure: echo ran-after-failure
after_script: echo ran-after-script
`);
      expect(r.code).toBe(JOB_EXIT.failed);
      expect(r.out).toMatch(/^one$/m);
      expect(r.out).toContain('The command "sh -c \'exit 4\'" exited with 4.');
      expect(r.out).toMatch(/^three$/m);
      expect(r.out).toMatch(/^ran-after-failure$/m);
      expect(r.out).not.toMatch(/^ran-after-success$/m);
      expect(r.out).toMatch(/^ran-after-script$/m);
      expect(r.out).toContain('Done. Your build exited with 1.');
    });

    it('after_success, after_failure and after_script never change the result', () => {
      const passed = run(`
language: shell
script: 'true'
after_success: ['false', echo ran-after-success]
after_script: ['false', sh -c 'exit 9']
`);
      expect(passed.code).toBe(JOB_EXIT.passed);
      expect(passed.out).toMatch(/^ran-after-success$/m);
      const failed = run("language: shell\nscript: 'false'\nafter_failure: 'true'\nafter_script: 'true'");
      expect(failed.code).toBe(JOB_EXIT.failed);
    });

    it('after_* run without set -e even when a command set it', () => {
      const r = run(
        "language: shell\nbefore_script: set -e\nscript: 'true'\nafter_success: ['false', echo still-here]",
      );
      expect(r.code).toBe(JOB_EXIT.passed);
      expect(r.out).toMatch(/^still-here$/m);
    });

    it('a command that does not parse fails like a failing command instead of ending the shell', () => {
      const r = run(`
language: shell
script:
  - 'if then fi'
  - echo after-syntax-error
`);
      expect(r.code).toBe(JOB_EXIT.failed);
      expect(r.out).toContain('exited with 2.');
      expect(r.out).toMatch(/^after-syntax-error$/m);
    });

    it('travis_retry runs a command up to 3 times', () => {
      const r = run(`
language: shell
script:
  - travis_retry sh -c 'n=$(cat tries 2>/dev/null || echo 0); echo $((n + 1)) > tries; echo "attempt $((n + 1))"; [ $((n + 1)) -ge 2 ]'
  - rm -f tries
  - travis_retry sh -c 'echo try >> always; exit 5'
  - echo "always failed $(wc -l < always | tr -d ' ') times"
  - rm -f always
`);
      expect(r.code).toBe(JOB_EXIT.failed);
      expect(r.out).toMatch(/^attempt 1$/m);
      expect(r.out).toMatch(/^attempt 2$/m);
      expect(r.out).not.toMatch(/^attempt 3$/m);
      expect(r.out).toContain('Retrying, 2 of 3.');
      expect(r.out).toContain('Retrying, 3 of 3.');
      expect(r.out).toContain('failed 3 times.');
      expect(r.out).toMatch(/^always failed 3 times$/m);
      expect(r.out).toContain('exited with 5.');
    }, 20_000);

    it('travis_wait runs a quiet command and prints its log and exit code', () => {
      const r = run(
        "language: shell\nscript:\n  - travis_wait 2 sh -c 'echo from-log; sleep 1; exit 3'\n  - echo next",
      );
      expect(r.code).toBe(JOB_EXIT.failed);
      expect(r.out).toMatch(/Still running \(1 of 2\): sh -c/);
      expect(r.out).toContain('exited with 3.');
      expect(r.out).toMatch(/Log:[\s\S]*^from-log$/m);
      expect(r.out).toMatch(/^next$/m);
    });

    it('travis_terminate ends the job at once with its code', () => {
      const r = run(
        'language: shell\nscript:\n  - travis_terminate 7\n  - echo never\nafter_script: echo never-after',
      );
      expect(r.code).toBe(7);
      expect(r.out).not.toMatch(/^never/m);
    });

    it('each phase is a fold with its duration', () => {
      const r = run('language: shell\ninstall: echo i\nscript: echo s\nafter_script: echo a');
      for (const phase of ['install', 'script', 'after_script']) {
        expect(r.out).toMatch(new RegExp(`travis_fold:start:${phase}\\ntravis_time:start:[0-9a-f]{8}\\n`));
        expect(r.out).toMatch(
          new RegExp(
            `travis_time:end:[0-9a-f]{8}:start=\\d{19},finish=\\d{19},duration=\\d+\\ntravis_fold:end:${phase}`,
          ),
        );
      }
      expect(r.out).not.toContain('travis_fold:start:before_install');
    });

    it('exports the TRAVIS_* variables and the config env, global first, as shell text', () => {
      const r = run(
        `
language: python
python: '3.12'
arch: s390x
env:
  global:
    - GREETING="hello world" DERIVED=$HOME/x
  jobs:
    - MODE: two words
script:
  - echo "$TRAVIS_OS_NAME $TRAVIS_CPU_ARCH $TRAVIS_EVENT_TYPE $TRAVIS_BRANCH $TRAVIS_PULL_REQUEST $TRAVIS_PULL_REQUEST_BRANCH $TRAVIS_JOB_NUMBER $TRAVIS_JOB_ID $TRAVIS_REPO_SLUG $TRAVIS_PYTHON_VERSION $TRAVIS_DIST"
  - echo "[$GREETING] [$DERIVED] [$MODE] [$TRAVIS_BUILD_DIR] [$TRAVIS_SECURE_ENV_VARS] [$CI]"
`,
        { type: 'pull_request', branch: 'main', repo: 'acme/widget', pullRequest: 12, headBranch: 'feature' },
      );
      expect(r.code).toBe(JOB_EXIT.passed);
      expect(r.out).toMatch(
        /^linux s390x pull_request main 12 feature 1\.1 job-1 acme\/widget 3\.12 bookworm$/m,
      );
      expect(r.out).toContain(`[hello world] [${dir}/x] [two words] [${dir}] [false] [true]`);
      expect(r.out).toContain('$ export GREETING="hello world"');
    });

    it('does not export secure variables, and says so', () => {
      const r = run('language: shell\nenv:\n  global:\n    - secure: c2VjcmV0\nscript: env');
      expect(r.code).toBe(JOB_EXIT.passed);
      expect(r.out).toMatch(/# \[secure:[0-9a-f]{12}\]: a secure variable; archway does not decrypt/);
      expect(r.out).not.toContain('c2VjcmV0');
    });

    it('works when a command sets -u', () => {
      const r = run(
        'language: shell\nbefore_install: set -u\nscript:\n  - travis_retry true\n  - travis_wait true',
      );
      expect(r.code).toBe(JOB_EXIT.passed);
    });

    it('a missing build directory errors the job', () => {
      const r = run('language: shell\nscript: echo never', push, join(dir, 'does-not-exist'));
      expect(r.code).toBe(JOB_EXIT.errored);
      expect(r.out).toContain('does-not-exist does not exist');
    });

    it('a job with no script and no default for its language fails saying so', () => {
      const r = run('language: python\ninstall: skip');
      expect(r.code).toBe(JOB_EXIT.failed);
      expect(r.out).toContain('no script: for language python');
    });
  },
);

describe('the shell a job script runs in', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'archway-shell-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const yaml = `language: shell
script:
  - echo "bash=\${BASH_VERSION:+yes}"
  - if [[ -n "$TRAVIS" ]]; then echo double-brackets; fi
`;
  const script = () => buildJobScript(job(yaml), { event: push, jobId: 'j', buildDir: dir });

  it('moves to bash where the image has it, as Travis runs jobs in bash', () => {
    // As the worker runs it: from its file (workers/job-script.ts), which bash then re-reads.
    const file = join(dir, 'script.sh');
    writeFileSync(file, script());
    const r = spawnSync('/bin/sh', [file], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir },
      encoding: 'utf8',
    });
    expect(r.status).toBe(JOB_EXIT.passed);
    expect(r.stdout).toMatch(/^bash=yes$/m);
    expect(r.stdout).toMatch(/^double-brackets$/m);
  });

  it.skipIf(!existsSync('/bin/busybox'))('runs as POSIX sh where there is no bash (a busybox image)', () => {
    const bin = join(dir, 'bin');
    mkdirSync(bin, { recursive: true });
    for (const tool of ['sh', 'date', 'sleep', 'cat', 'rm', 'basename'])
      symlinkSync('/bin/busybox', join(bin, tool));
    const r = spawnSync(join(bin, 'sh'), ['-c', script()], {
      env: { PATH: bin, HOME: dir },
      encoding: 'utf8',
    });
    expect(r.stdout).toMatch(/^bash=$/m);
    expect(r.status).toBe(JOB_EXIT.passed);
  });
});

describe('travisEnv', () => {
  it('describes a push job', () => {
    const env = Object.fromEntries(
      travisEnv(job('language: cpp\ncompiler: clang-15\narch: aarch64\nscript: make'), {
        event: { ...push, commitMessage: 'msg' },
        jobId: 'abc',
      }),
    );
    expect(env).toMatchObject({
      CI: 'true',
      TRAVIS: 'true',
      TRAVIS_OS_NAME: 'linux',
      TRAVIS_CPU_ARCH: 'arm64',
      TRAVIS_DIST: 'bookworm',
      TRAVIS_LANGUAGE: 'cpp',
      TRAVIS_EVENT_TYPE: 'push',
      TRAVIS_BRANCH: 'main',
      TRAVIS_TAG: '',
      TRAVIS_COMMIT: 'a'.repeat(40),
      TRAVIS_COMMIT_MESSAGE: 'msg',
      TRAVIS_PULL_REQUEST: 'false',
      TRAVIS_PULL_REQUEST_BRANCH: '',
      TRAVIS_REPO_SLUG: 'acme/widget',
      TRAVIS_BUILD_DIR: '/root/build/acme/widget',
      TRAVIS_BUILD_NUMBER: '1',
      TRAVIS_JOB_ID: 'abc',
      TRAVIS_JOB_NUMBER: '1.1',
      TRAVIS_BUILD_STAGE_NAME: 'Test',
      TRAVIS_ALLOW_FAILURE: 'false',
      TRAVIS_SECURE_ENV_VARS: 'false',
      TRAVIS_COMPILER: 'clang-15',
      CC: 'clang-15',
      CXX: 'clang++-15',
    });
  });

  it('describes a pull request and a tag', () => {
    const pr = Object.fromEntries(
      travisEnv(job('script: x'), {
        event: {
          type: 'pull_request',
          branch: 'main',
          pullRequest: 5,
          headBranch: 'fix',
          headSha: 'b'.repeat(40),
          headRepo: 'me/widget',
        },
        jobId: 'j',
        buildNumber: 9,
      }),
    );
    expect(pr).toMatchObject({
      TRAVIS_PULL_REQUEST: '5',
      TRAVIS_PULL_REQUEST_BRANCH: 'fix',
      TRAVIS_PULL_REQUEST_SHA: 'b'.repeat(40),
      TRAVIS_PULL_REQUEST_SLUG: 'me/widget',
      TRAVIS_BUILD_NUMBER: '9',
    });
    const tag = Object.fromEntries(
      travisEnv(job('script: x'), { event: { type: 'push', tag: 'v1.0' }, jobId: 'j' }),
    );
    expect(tag).toMatchObject({ TRAVIS_TAG: 'v1.0', TRAVIS_BRANCH: 'v1.0' });
  });

  it('sets the version variable of each version key', () => {
    const env = Object.fromEntries(
      travisEnv(job('language: ruby\nrvm: 3.3\ngemfile: gemfiles/rails7.gemfile\nscript: x'), {
        event: push,
        jobId: 'j',
      }),
    );
    expect(env).toMatchObject({
      TRAVIS_RUBY_VERSION: '3.3',
      BUNDLE_GEMFILE: '/root/build/acme/widget/gemfiles/rails7.gemfile',
    });
  });
});
