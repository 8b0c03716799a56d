import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { checkLeftovers } from '../support/leak-check.ts';
import { TEST_ENV } from '../support/test-host.ts';

const archway = (args: string[], env: Record<string, string> = {}) =>
  execa('bin/archway', args, {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...TEST_ENV, ...env },
    extendEnv: false,
    reject: false,
  });

checkLeftovers('each');

describe('bin/archway (the acceptance forms)', () => {
  it('run --arch arm64 --image busybox -- uname -m prints aarch64 and exits 0', async () => {
    const r = await archway(['run', '--arch', 'arm64', '--image', 'busybox', '--', 'uname', '-m']);
    expect(r.stdout).toBe('aarch64');
    expect(r.exitCode).toBe(0);
  });

  it("passes the command's exit code through", async () => {
    const r = await archway(['run', '--arch', 'arm64', '--image', 'busybox', '--', 'sh', '-c', 'exit 7']);
    expect(r.exitCode).toBe(7);
  });

  it('--timeout 2 ends a long command with a timeout message and a non-zero exit', async () => {
    const started = Date.now();
    const r = await archway([
      'run',
      '--arch',
      'arm64',
      '--image',
      'busybox',
      '--timeout',
      '2',
      '--',
      'sleep',
      '60',
    ]);
    expect(r.exitCode).toBe(124);
    expect(r.stderr).toMatch(/timed out after 2 s/);
    // Sanity, not a performance target: it did not wait for the 60 s sleep.
    expect(Date.now() - started).toBeLessThan(30_000);
  });

  it('--memory 64 kills a command that allocates 200 MiB and says it ran out of memory', async () => {
    const r = await archway([
      'run',
      '--arch',
      'arm64',
      '--image',
      'busybox',
      '--memory',
      '64',
      '--',
      'sh',
      '-c',
      'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo survived',
    ]);
    expect(r.exitCode).toBe(137);
    expect(r.stderr).toMatch(/out of memory \(limit 64 MiB\)/);
    expect(r.stdout).not.toContain('survived');
  });

  it('images list shows every arch of busybox with its digest', async () => {
    const r = await archway(['images', 'list']);
    expect(r.exitCode).toBe(0);
    for (const arch of ['amd64', 'arm64', 'ppc64le', 's390x']) {
      expect(r.stdout).toMatch(new RegExp(`^busybox\\s+${arch}\\s+sha256:[0-9a-f]{64}\\s`, 'm'));
    }
  });

  it('bad input: a clear error naming what is wrong, exit 2', async () => {
    const arch = await archway(['run', '--arch', 'mips', '--image', 'busybox', '--', 'true']);
    expect(arch.exitCode).toBe(2);
    expect(arch.stderr).toMatch(/unknown arch 'mips'/);
    const mem = await archway([
      'run',
      '--arch',
      'amd64',
      '--image',
      'busybox',
      '--memory',
      '0',
      '--',
      'true',
    ]);
    expect(mem.exitCode).toBe(2);
    expect(mem.stderr).toMatch(/--memory: expected a positive integer, got '0'/);
    const img = await archway(['run', '--arch', 'amd64', '--image', '../x', '--', 'true']);
    expect(img.exitCode).toBe(2);
    expect(img.stderr).toMatch(/image/);
    const recipe = await archway(['images', 'build', 'nosuch', '--arch', 'amd64']);
    expect(recipe.exitCode).toBe(2);
    expect(recipe.stderr).toMatch(/no recipe for image 'nosuch'.*known: busybox/);
  });

  it('doctor prints one line per requirement and exits 0 on this prepared host', async () => {
    // The pool's free room depends on what images and tests hold (CI's had 6.9 GiB, under the two slots'
    // 8 GiB of default disk); bounds-api.test.ts covers that check, so here the default disk is small.
    const r = await archway(['doctor'], { ARCHWAY_MAX_DISK_MIB: '256' });
    for (const name of [
      'btrfs',
      'loop devices',
      'runc',
      'user namespaces',
      'id ranges',
      'id ranges unused',
      'unprivileged user namespaces',
      'cgroups',
      'binfmt arm64',
      'binfmt ppc64le',
      'binfmt s390x',
      'pool room',
      'redis-server',
    ]) {
      expect(r.stdout).toMatch(new RegExp(`^ok\\s+${name}\\s`, 'm'));
    }
    expect(r.exitCode).toBe(0);
  });
});
