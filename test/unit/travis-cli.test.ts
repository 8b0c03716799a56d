import { execa } from 'execa';
import { describe, expect, it } from 'vitest';

const archway = (args: string[], input?: string) =>
  execa('bin/archway', args, {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    extendEnv: false,
    reject: false,
    ...(input === undefined ? {} : { input }),
  });

const fixture = (name: string) => `test/fixtures/travis/${name}`;

// Each test spawns the real CLI (compiled into dist/; bin/archway compiles again when a source is newer).
describe('bin/archway config expand', { timeout: 60_000 }, () => {
  it('prints one block per job, the dropped jobs and the ignored keys', async () => {
    const r = await archway([
      'config',
      'expand',
      fixture('numpy-style.yml'),
      '--event',
      'cron',
      '--branch',
      'main',
    ]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^build: 4 jobs \(4 to run\) for cron to branch main$/m);
    expect(r.stdout).toMatch(/^job 1\.4\n {2}stage: +test\n {2}arch: +arm64 \(arm64-graviton2\)$/m);
    expect(r.stdout).toMatch(/^ {2}language: +python, python 3\.8$/m);
    expect(r.stdout).toMatch(/^ {2}env: +DOWNLOAD_OPENBLAS=1\n {19}ATLAS=None$/m);
    expect(r.stdout).toMatch(/^ {2}allowed to fail: no$/m);
    expect(r.stdout).toContain('ignored keys (archway does not run these):');
    expect(r.stdout).toMatch(/^ {2}virt \(jobs\.include\[2\]\.virt, jobs\.include\[3\]\.virt\): /m);
    expect(r.stdout).toContain('not in this build:');
  });

  it('shows skipped jobs with their reason and the build conditions', async () => {
    const r = await archway(
      ['config', 'expand', '-', '--branch', 'main'],
      'os: [linux, osx]\nscript: make\n',
    );
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^ {2}skipped: +yes: os: osx jobs are not run/m);
    const no = await archway(['config', 'expand', fixture('python-tox.yml'), '--branch', 'feature']);
    expect(no.stdout).toMatch(
      /^build: does not run for push to branch feature: branch feature: not in branches\.only/m,
    );
  });

  it('--json prints the expansion, event included', async () => {
    const r = await archway([
      'config',
      'expand',
      fixture('node-anchors.yml'),
      '--tag',
      'v1.0.0',
      '--repo',
      'acme/widget',
      '--fork',
      '--commit-message',
      'release',
      '--build-number',
      '12',
      '--json',
    ]);
    expect(r.exitCode).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.event).toEqual({
      type: 'push',
      branch: 'v1.0.0',
      tag: 'v1.0.0',
      commitMessage: 'release',
      repo: 'acme/widget',
      fork: true,
    });
    expect(out.jobs.map((j: { number: string; stage: string }) => `${j.number} ${j.stage}`)).toEqual([
      '12.1 test',
      '12.2 test',
      '12.3 test',
      '12.4 release',
    ]);
  });

  it('exits 2 with the error, its line and a caret for a bad config', async () => {
    const r = await archway(['config', 'expand', fixture('bad-arch.yml')]);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(
      [
        "archway: test/fixtures/travis/bad-arch.yml: line 7, column 13: jobs.include[2].arch: unknown arch 'riscv64': expected one of amd64, arm64, arm64-graviton2, ppc64le, s390x (aliases: x86_64, x64, aarch64, ppc64el, power, ppc64)",
        '7 |     - arch: riscv64',
        '                ^',
      ].join('\n'),
    );
  });

  it('exits 2 for a missing file and for a bad --event', async () => {
    const missing = await archway(['config', 'expand', 'no/such/file.yml']);
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toContain('cannot read no/such/file.yml: no such file');
    const bad = await archway(['config', 'expand', fixture('rust-style.yml'), '--event', 'release']);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/Allowed choices are push, pull_request, cron, api/);
  });
});
