import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type BuildEvent,
  buildJobScript,
  ConfigError,
  type ExpandedJob,
  expandRepoConfig,
  JOB_EXIT,
} from '../../webhooks/index.ts';

const push: BuildEvent = { type: 'push', branch: 'main', repo: 'acme/widget' };

function expand(yaml: string) {
  return expandRepoConfig(yaml, push);
}

function job(yaml: string): ExpandedJob {
  const j = expand(yaml).jobs[0];
  if (!j) throw new Error('no job');
  return j;
}

describe('addons.apt: what the config asks for', () => {
  it('reads packages (nested lists flattened, nulls and duplicates dropped) and update', () => {
    const j = job(`
language: c
addons:
  apt:
    update: true
    packages: [zlib1g-dev, [libssl-dev, null, [cmake]], zlib1g-dev, 'libfoo=1.2-3', 'libbar:arm64']
`);
    expect(j.apt).toEqual({
      packages: ['zlib1g-dev', 'libssl-dev', 'cmake', 'libfoo=1.2-3', 'libbar:arm64'],
      update: true,
      sources: [],
    });
  });

  it('takes the short forms: apt as a list, apt as one string, and the old apt_packages', () => {
    expect(job('addons: {apt: [a1, a2]}').apt?.packages).toEqual(['a1', 'a2']);
    expect(job('addons: {apt: libx11-dev}').apt?.packages).toEqual(['libx11-dev']);
    expect(job('addons: {apt_packages: [b1]}').apt?.packages).toEqual(['b1']);
  });

  it('update: true alone is an apt step; an empty apt is none', () => {
    expect(job('addons: {apt: {update: true}}').apt).toEqual({ packages: [], update: true, sources: [] });
    expect(job('addons: {apt: {packages: []}}').apt).toBeUndefined();
    expect(job('script: true').apt).toBeUndefined();
  });

  it('refuses a package name that is not one, at its line: nothing a config writes reaches the shell', () => {
    expect(() => expand('addons:\n  apt:\n    packages:\n      - ok-pkg\n      - "x; rm -rf /"\n')).toThrow(
      ConfigError,
    );
    expect(() => expand('addons:\n  apt:\n    packages:\n      - ok-pkg\n      - "x; rm -rf /"\n')).toThrow(
      /line 5, column 9: addons\.apt\.packages\[1\]: 'x; rm -rf \/' is not a Debian package name/,
    );
    expect(() => expand('addons:\n  apt:\n    packages: [{a: 1}]\n')).toThrow(
      /addons\.apt\.packages\[0\]: expected a Debian package name, got a mapping/,
    );
    expect(() => expand('addons:\n  apt:\n    update: maybe\n')).toThrow(
      /addons\.apt\.update: expected true or false, got 'maybe'/,
    );
    expect(() => expand('addons: [apt]\n')).toThrow(/addons: expected a mapping of add-ons/);
  });

  it('applies a Debian sourceline with its key_url; reports Ubuntu PPAs, aliases and Ubuntu suites as ignored', () => {
    const r = expand(`
addons:
  apt:
    sources:
      - sourceline: 'deb http://apt.llvm.org/bookworm/ llvm-toolchain-bookworm-17 main'
        key_url: 'https://apt.llvm.org/llvm-snapshot.gpg.key'
      - 'deb http://deb.debian.org/debian bookworm-backports main'
      - ppa:ubuntu-toolchain-r/test
      - ubuntu-toolchain-r-test
      - sourceline: 'ppa:deadsnakes/ppa'
      - sourceline: 'deb http://apt.llvm.org/xenial/ llvm-toolchain-xenial-9 main'
        key_url: 'https://apt.llvm.org/llvm-snapshot.gpg.key'
      - sourceline: 'deb http://archive.ubuntu.com/ubuntu bookworm main'
    packages: [clang-17]
`);
    expect(r.jobs[0]?.apt?.sources).toEqual([
      {
        sourceline: 'deb http://apt.llvm.org/bookworm/ llvm-toolchain-bookworm-17 main',
        keyUrl: 'https://apt.llvm.org/llvm-snapshot.gpg.key',
      },
      { sourceline: 'deb http://deb.debian.org/debian bookworm-backports main' },
    ]);
    const sources = r.ignored.filter((i) => i.key === 'addons.apt.sources');
    expect(sources.map((i) => i.paths)).toEqual([
      ['addons.apt.sources[2]'],
      ['addons.apt.sources[3]'],
      ['addons.apt.sources[4]'],
      ['addons.apt.sources[5]'],
      ['addons.apt.sources[6]'],
    ]);
    expect(sources[0]?.reason).toMatch(/^ppa:ubuntu-toolchain-r\/test: an Ubuntu PPA .*not added$/);
    expect(sources[1]?.reason).toMatch(
      /^ubuntu-toolchain-r-test: a name from Travis's list of source aliases/,
    );
    expect(sources[1]?.reason).toContain('sourceline');
    expect(sources[2]?.reason).toMatch(/^ppa:deadsnakes\/ppa: an Ubuntu PPA/);
    expect(sources[3]?.reason).toMatch(/the suite 'llvm-toolchain-xenial-9' is an Ubuntu release/);
    expect(sources[4]?.reason).toMatch(/archive\.ubuntu\.com is an Ubuntu archive/);
  });

  it('refuses a sourceline that is not one and a key_url that is not http(s)', () => {
    expect(() => expand("addons:\n  apt:\n    sources:\n      - sourceline: 'deb nowhere'\n")).toThrow(
      /addons\.apt\.sources\[0\]\.sourceline: 'deb nowhere' is not an apt source line/,
    );
    expect(() =>
      expand(
        "addons:\n  apt:\n    sources:\n      - sourceline: 'deb http://x.example/debian bookworm main'\n        key_url: 'file:///etc/passwd'\n",
      ),
    ).toThrow(/addons\.apt\.sources\[0\]\.key_url: expected an http or https URL/);
  });

  it('lists other add-ons and apt keys it does not apply as ignored, not addons.apt itself', () => {
    const r = expand(`
addons:
  ssh_known_hosts: github.com
  apt:
    packages: [a]
    config: {retries: true}
`);
    expect(r.ignored.map((i) => [i.key, i.paths])).toEqual([
      ['addons.ssh_known_hosts', ['addons.ssh_known_hosts']],
      ['addons.apt.config', ['addons.apt.config']],
    ]);
  });
});

/**
 * The apt fold run for real in the host's shells, with `sudo`, `apt-get` and `apt-cache` replaced
 * by stand-ins on PATH (apt is outside archway; the system suite runs the real one in images).
 */
describe('addons.apt: the job script', () => {
  let dir: string;
  let bin: string;
  let log: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'archway-apt-'));
    bin = join(dir, 'bin');
    log = join(dir, 'calls.log');
    mkdirSync(bin);
    const tool = (name: string, body: string) => {
      writeFileSync(join(bin, name), `#!/bin/sh\n${body}\n`);
      chmodSync(join(bin, name), 0o755);
    };
    // sudo runs apt-get; anything else it only records (the job would write into /etc).
    tool(
      'sudo',
      `echo "sudo $*" >> "${'$'}APT_LOG"; [ "$1" = -E ] && shift; case "$1" in apt-get) exec "$@" ;; *) cat >/dev/null ;; esac`,
    );
    tool(
      'apt-get',
      `echo "apt-get $* DEBIAN_FRONTEND=${'$'}DEBIAN_FRONTEND" >> "${'$'}APT_LOG"
case " $* " in *" update"*) [ -n "${'$'}APT_UPDATE_FAILS" ] && { echo "E: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease"; exit 100; } ;; esac
for a in "$@"; do case "$a" in nosuch*) echo "E: Unable to locate package $a"; exit 100 ;; esac; done
exit 0`,
    );
    tool('apt-cache', 'for a in "$@"; do case "$a" in nosuch*) exit 100 ;; esac; done; exit 0');
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  function run(yaml: string, env: Record<string, string> = {}) {
    writeFileSync(log, '');
    const script = buildJobScript(job(yaml), {
      event: push,
      jobId: 'job-1',
      buildDir: dir,
      preferBash: false,
    });
    const r = spawnSync('/bin/sh', ['-c', script], {
      cwd: dir,
      env: { PATH: `${bin}:/usr/bin:/bin`, HOME: dir, APT_LOG: log, ...env },
      encoding: 'utf8',
      timeout: 30_000,
    });
    return { code: r.status, out: `${r.stdout}${r.stderr}`, calls: readFileSync(log, 'utf8') };
  }

  const config = `
language: shell
addons:
  apt:
    packages: [zlib1g-dev, [libssl-dev]]
before_install: echo BEFORE_INSTALL
script: echo SCRIPT
`;

  it('runs in its own fold before before_install: apt-get update (errors on any failure), then install', () => {
    const r = run(config);
    expect(r.code).toBe(JOB_EXIT.passed);
    expect(r.calls.trim().split('\n')).toEqual([
      'sudo -E apt-get -yq -o APT::Update::Error-Mode=any update',
      'apt-get -yq -o APT::Update::Error-Mode=any update DEBIAN_FRONTEND=noninteractive',
      'sudo -E apt-get -yq --no-install-suggests --no-install-recommends install zlib1g-dev libssl-dev',
      'apt-get -yq --no-install-suggests --no-install-recommends install zlib1g-dev libssl-dev DEBIAN_FRONTEND=noninteractive',
    ]);
    const fold = r.out.indexOf('travis_fold:start:apt');
    const end = r.out.indexOf('travis_fold:end:apt');
    expect(fold).toBeGreaterThanOrEqual(0);
    expect(r.out.slice(fold, end)).toMatch(/travis_time:start:[0-9a-f]{8}\n.*Installing APT Packages/s);
    expect(r.out.slice(fold, end)).toMatch(/travis_time:end:[0-9a-f]{8}:start=\d+,finish=\d+,duration=\d+/);
    expect(end).toBeLessThan(r.out.indexOf('travis_fold:start:before_install'));
  });

  it('a failed apt-get update errors the job in addons.apt (exit 2), before before_install', () => {
    const r = run(config, { APT_UPDATE_FAILS: '1' });
    expect(r.code).toBe(JOB_EXIT.errored);
    expect(r.out).toContain('E: Failed to fetch');
    expect(r.out).toContain(
      'The command "sudo -E apt-get -yq -o APT::Update::Error-Mode=any update" failed and exited with 100 during addons.apt.',
    );
    expect(r.out).not.toContain('BEFORE_INSTALL');
    expect(r.calls).not.toContain('install');
  });

  it('a package that does not exist errors the job there, naming the packages apt does not have', () => {
    const r = run(config.replace('[libssl-dev]', '[nosuch-one, libssl-dev, nosuch-two]'));
    expect(r.code).toBe(JOB_EXIT.errored);
    expect(r.out).toContain(
      'addons.apt: no such package in the apt sources of this image: nosuch-one nosuch-two',
    );
    expect(r.out).toMatch(/failed and exited with 100 during addons\.apt\./);
    expect(r.out).not.toContain('BEFORE_INSTALL');
  });

  it('with ARCHWAY_NETWORK=none it errors at once, saying the job has no network and how to get it', () => {
    const r = run(config, { ARCHWAY_NETWORK: 'none' });
    expect(r.code).toBe(JOB_EXIT.errored);
    expect(r.out).toContain(
      'addons.apt: this job has no network (network: none), so apt cannot install zlib1g-dev libssl-dev.',
    );
    expect(r.out).toMatch(/get network egress unless the operator .* has turned egress off/);
    expect(r.calls).toBe('');
    expect(r.out).toContain('travis_fold:end:apt');
  });

  it('update: true alone runs apt-get update and installs nothing', () => {
    const r = run('language: shell\naddons: {apt: {update: true}}\nscript: true\n');
    expect(r.code).toBe(JOB_EXIT.passed);
    expect(r.calls).toContain('apt-get -yq -o APT::Update::Error-Mode=any update');
    expect(r.calls).not.toContain('install');
  });

  it('adds a source and its key before the update', () => {
    const r = run(`
language: shell
addons:
  apt:
    sources:
      - sourceline: 'deb http://deb.debian.org/debian bookworm-backports main'
    packages: [zlib1g-dev]
script: true
`);
    expect(r.code).toBe(JOB_EXIT.passed);
    expect(r.calls.split('\n')[0]).toBe('sudo tee -a /etc/apt/sources.list.d/archway-addons.list');
    expect(r.out).toContain(
      "$ printf '%s\\n' 'deb http://deb.debian.org/debian bookworm-backports main' | sudo tee -a /etc/apt/sources.list.d/archway-addons.list >/dev/null",
    );
  });

  it('an image without apt-get gets a clear error, not a command-not-found in the middle', () => {
    const script = buildJobScript(job(config), {
      event: push,
      jobId: 'job-1',
      buildDir: dir,
      preferBash: false,
    });
    const empty = join(dir, 'empty-bin');
    mkdirSync(empty, { recursive: true });
    for (const t of ['sh', 'printf', 'date', 'cat']) {
      const found = spawnSync('/bin/sh', ['-c', `command -v ${t}`], { encoding: 'utf8' }).stdout.trim();
      if (found.startsWith('/')) spawnSync('ln', ['-sf', found, join(empty, t)]);
    }
    const r = spawnSync('/bin/sh', ['-c', script], {
      cwd: dir,
      env: { PATH: empty, HOME: dir },
      encoding: 'utf8',
    });
    expect(r.status).toBe(JOB_EXIT.errored);
    expect(r.stdout).toContain('addons.apt: this image has no apt-get; addons.apt needs a Debian image');
  });
});

describe('the log header: compilers and language versions the image may not have', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'archway-header-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  function run(yaml: string) {
    const script = buildJobScript(job(yaml), {
      event: push,
      jobId: 'job-1',
      buildDir: dir,
      preferBash: false,
    });
    const r = spawnSync('/bin/sh', ['-c', script], {
      cwd: dir,
      env: { PATH: '/usr/bin:/bin', HOME: dir },
      encoding: 'utf8',
      timeout: 30_000,
    });
    return { code: r.status, out: `${r.stdout}${r.stderr}` };
  }

  it('a compiler the image lacks is a warning first, then errors the job when announced, before any phase', () => {
    const r = run('language: cpp\ncompiler: clang-99\nbefore_install: echo BEFORE\nscript: echo SCRIPT\n');
    expect(r.code).toBe(JOB_EXIT.errored);
    expect(r.out).toContain(
      '[archway] warning: compiler: clang-99 (CC) is not in this image: the job errors when it is announced',
    );
    expect(r.out).toContain('[archway] warning: compiler: clang++-99 (CXX) is not in this image');
    expect(r.out).toContain('$ clang-99 --version');
    expect(r.out).toContain('[archway] error: compiler: clang-99 (CC) is not in this image');
    expect(r.out).not.toContain('BEFORE');
    expect(r.out).not.toContain('SCRIPT');
  });

  it('a compiler the image has is announced with its version, and the job runs', () => {
    const cc = spawnSync('/bin/sh', ['-c', 'command -v cc'], { encoding: 'utf8' }).stdout.trim();
    if (cc === '') return; // the host has no C compiler: nothing to announce
    const r = run('language: c\ncompiler: cc\nenv: CC="env cc"\nscript: echo SCRIPT\n');
    expect(r.code).toBe(JOB_EXIT.passed);
    expect(r.out).toContain('$ env cc --version');
    expect(r.out).not.toContain('[archway] warning');
    expect(r.out).toContain('SCRIPT');
  });

  it('a compiler that addons.apt installs is not warned about before the install', () => {
    const j = job('language: c\ncompiler: clang-99\naddons: {apt: [clang-99]}\nscript: true\n');
    const script = buildJobScript(j, { event: push, jobId: 'job-1', buildDir: dir });
    expect(script).toContain("archway_check_compiler CC 'clang-99'");
    expect(script.indexOf('archway_announce_compiler CC\n')).toBeGreaterThan(script.indexOf('travis_fold'));
    expect(script.indexOf('archway_announce_compiler CC\n')).toBeGreaterThan(
      script.indexOf('archway_fold_start apt'),
    );
  });

  it('a language version the image does not have is a warning naming the one it has', () => {
    const r = run('language: python\npython: "2.7"\ninstall: skip\nscript: echo SCRIPT\n');
    const have = spawnSync('/bin/sh', ['-c', 'python3 --version'], {
      encoding: 'utf8',
      env: { PATH: '/usr/bin:/bin' },
    });
    if (have.status !== 0) {
      expect(r.out).toContain('[archway] warning: python 2.7 was asked for, but this image has no python3');
    } else {
      const version = (have.stdout + have.stderr).trim().replace(/^Python /, '');
      expect(r.out).toContain(
        `[archway] warning: python 2.7 was asked for, but this image has python3 ${version}: archway does not install language versions`,
      );
      // The version it has is not warned about.
      const major = version.split('.').slice(0, 2).join('.');
      expect(run(`language: python\npython: "${major}"\ninstall: skip\nscript: true\n`).out).not.toContain(
        '[archway] warning',
      );
    }
    expect(r.code).toBe(JOB_EXIT.passed);
  });

  it('a version that is not a number (nightly, pypy3) says archway does not install versions', () => {
    const r = run('language: python\npython: nightly\ninstall: skip\nscript: true\n');
    expect(r.out).toMatch(/\[archway\] warning: python nightly was asked for/);
  });
});
