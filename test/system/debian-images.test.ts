import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type BuildProgress, buildImage, KEPT_VERSIONS, loadRecipe } from '../../images/index.ts';
import { type Arch, poolLayout } from '../../src/core/index.ts';
import { buildJobScript, expandRepoConfig, JOB_EXIT } from '../../webhooks/index.ts';
import { imagesInUseOn } from '../../workers/index.ts';
import { collect, createTestHost, leftovers, type TestHost } from '../support/test-host.ts';

/**
 * The Debian images built for real, as on a fresh host: debian-bookworm for amd64 and for one
 * emulated arch (s390x, big-endian, through qemu-user), and the default image of repository
 * configs (debian-bookworm-build) for amd64. Each run builds them again: about a minute for amd64,
 * a few minutes under qemu on a 2-core VM, with the package cache of the test pool.
 */
const hosts: TestHost[] = [];
const host = async (arch: Arch) => {
  const h = await createTestHost(arch);
  hosts.push(h);
  return h;
};

async function build(name: string, arch: Arch): Promise<BuildProgress[]> {
  const h = await host(arch);
  const progress: BuildProgress[] = [];
  await buildImage(name, arch, {
    store: h.store,
    cacheDir: poolLayout(h.config.ARCHWAY_POOL_PATH).cache,
    idBase: h.config.ARCHWAY_UID_BASE,
    mirror: h.config.ARCHWAY_DEBIAN_MIRROR,
    logger: h.logger,
    onProgress: (p) => progress.push(p),
    inUse: () => imagesInUseOn(h.config.ARCHWAY_POOL_PATH),
  });
  // Each run is a new version (the files carry the build's time): the older ones no container
  // uses are gone, so the test pool does not fill up run after run (it had 11 of this one).
  const used = await imagesInUseOn(h.config.ARCHWAY_POOL_PATH);
  const held = (await h.store.list()).filter((v) => v.name === name && v.arch === arch);
  expect(held.filter((v) => !used.has(v.digest)).length).toBeLessThanOrEqual(KEPT_VERSIONS);
  return progress;
}

/** The script archway makes for the first job of a repository config, as the GitHub path does. */
function jobScript(yaml: string): string {
  const event = { type: 'push' as const, branch: 'main', repo: 'acme/widget' };
  const job = expandRepoConfig(yaml, event).jobs[0];
  if (!job) throw new Error('no job');
  return buildJobScript(job, { event, jobId: 'job-1', buildDir: '/root' });
}

async function run(
  arch: Arch,
  image: string,
  jobId: string,
  script: string,
  env: Record<string, string> = {},
) {
  const h = await host(arch);
  return collect(await h.launcher.launch({ jobId, image, argv: ['sh', '-c', script], env }));
}

afterEach(async () => {
  for (const h of hosts.splice(0)) await h.launcher.close();
  expect(await leftovers()).toEqual([]);
});
afterAll(async () => {
  for (const h of hosts.splice(0)) await h.launcher.close();
});

describe.each([
  ['amd64', 'x86_64'],
  ['s390x', 's390x'],
] as const)('debian-bookworm for %s', (arch, uname) => {
  let progress: BuildProgress[] = [];
  beforeAll(async () => {
    progress = await build('debian-bookworm', arch);
  }, 3_600_000);

  it('the build reported its phases, with packages counted', () => {
    const phases = progress.filter((p) => !p.phaseDone).map((p) => p.phase);
    expect(phases).toEqual(
      expect.arrayContaining([
        'downloading essential packages',
        'installing essential packages',
        "installing the recipe's packages",
        'shifting owners',
      ]),
    );
    const installed = progress.find((p) => p.phase === 'installing essential packages' && p.phaseDone);
    expect(installed?.detail).toMatch(/^set up \d+\/\d+ packages$/);
  });

  it('has apt, and sudo runs commands as the job root, quietly, in every form Travis configs use', async () => {
    const r = await run(
      arch,
      'debian-bookworm',
      `sudo-${arch}`,
      [
        'set -e',
        'uname -m',
        'apt-get --version | head -n 1',
        'sudo id -u',
        `sudo -E sh -c 'echo "E=$FOO"'`,
        `sudo -H sh -c 'echo "H=$HOME"'`,
        `sudo sh -c 'echo "sh-c=$(id -un)"'`,
        // What a job sees once the runtime sets no_new_privs: no setuid transition is needed.
        'setpriv --no-new-privs sudo id -u',
        'sudo apt-get --version | head -n 1',
      ].join('\n'),
      { FOO: 'kept' },
    );
    expect(r.output).not.toMatch(/unable to resolve host/);
    expect(r.exitCode).toBe(0);
    const debArch = arch === 'amd64' ? 'amd64' : 's390x';
    expect(r.output.trim().split('\n')).toEqual([
      uname,
      `apt 2.6.1 (${debArch})`,
      '0',
      'E=kept',
      'H=/root',
      'sh-c=root',
      '0',
      `apt 2.6.1 (${debArch})`,
    ]);
  });

  it('a plain apt-get update that cannot fetch fails (the image sets Error-Mode any), not a warning and exit 0', async () => {
    // No network here: the fetch fails (no resolver), and apt must say so with its exit code.
    const r = await run(arch, 'debian-bookworm', `apt-update-${arch}`, 'apt-get -q update; echo "exit=$?"');
    expect(r.output).toMatch(/^E: Failed to fetch/m);
    expect(r.output).toContain('exit=100');
  });
});

describe('debian-bookworm-build for amd64 (the default image of repository configs)', () => {
  const apt =
    'language: c\naddons:\n  apt:\n    packages: [zlib1g-dev]\nbefore_install: echo BEFORE\nscript: echo SCRIPT\n';

  it('addons.apt in a job without network errors at once, saying so (ARCHWAY_NETWORK=none)', async () => {
    const started = Date.now();
    const r = await run('amd64', 'debian-bookworm-build', 'apt-none', jobScript(apt), {
      ARCHWAY_NETWORK: 'none',
    });
    expect(r.exitCode).toBe(JOB_EXIT.errored);
    expect(r.output).toContain(
      'addons.apt: this job has no network (network: none), so apt cannot install zlib1g-dev.',
    );
    expect(r.output).not.toContain('BEFORE');
    expect(Date.now() - started).toBeLessThan(60_000);
  });

  it('addons.apt whose apt-get update cannot fetch errors the job in its fold, with apt exit 100', async () => {
    // This container has no network: the update fails the way an unreachable mirror does.
    const r = await run('amd64', 'debian-bookworm-build', 'apt-fail', jobScript(apt));
    expect(r.exitCode).toBe(JOB_EXIT.errored);
    expect(r.output).toMatch(/^E: Failed to fetch/m);
    expect(r.output).toContain('failed and exited with 100 during addons.apt.');
    expect(r.output).not.toContain('BEFORE');
  });

  it('compiler: clang is announced with its version; a compiler the image lacks errors the job', async () => {
    const ok = await run(
      'amd64',
      'debian-bookworm-build',
      'cc-clang',
      jobScript('language: c\ncompiler: clang\nscript: $CC --version | head -1\n'),
    );
    expect(ok.output).toContain('$ clang --version');
    expect(ok.output).toMatch(/Debian clang version 14/);
    expect(ok.exitCode).toBe(JOB_EXIT.passed);
    const missing = await run(
      'amd64',
      'debian-bookworm-build',
      'cc-missing',
      jobScript('language: c\ncompiler: clang-9\nscript: $CC --version | head -1\n'),
    );
    expect(missing.output).toContain('[archway] warning: compiler: clang-9 (CC) is not in this image');
    expect(missing.output).toContain('[archway] error: compiler: clang-9 (CC) is not in this image');
    expect(missing.exitCode).toBe(JOB_EXIT.errored);
  });

  beforeAll(async () => {
    await build('debian-bookworm-build', 'amd64');
  }, 3_600_000);

  it("has what Travis's Linux images gave C/C++ and scripting projects", async () => {
    const tools = [
      'gcc',
      'g++',
      'cc',
      'clang',
      'clang++',
      'make',
      'cmake',
      'autoconf',
      'automake',
      'libtool',
      'libtoolize',
      'pkg-config',
      'git',
      'ssh',
      'sudo',
      'curl',
      'wget',
      'unzip',
      'xz',
      'python3',
      'pip3',
    ];
    const r = await run(
      'amd64',
      'debian-bookworm-build',
      'build-tools',
      `missing=''; for t in ${tools.join(' ')}; do command -v "$t" >/dev/null || missing="$missing $t"; done; echo "missing:$missing"
python3 -m venv /tmp/venv && /tmp/venv/bin/python -c 'import sys; print("venv", sys.prefix)'`,
    );
    expect(r.output).toContain('missing:\n');
    expect(r.output).toContain('venv /tmp/venv');
    expect(r.exitCode).toBe(0);
  });

  it('has every command, at every version, that its recipe says it provides (config expand relies on it)', async () => {
    const recipe = await loadRecipe('debian-bookworm-build');
    const commands = recipe.provides?.commands ?? [];
    expect(commands.length).toBeGreaterThan(0);
    const r = await run(
      'amd64',
      'debian-bookworm-build',
      'build-provides',
      `for t in ${commands.join(' ')}; do command -v "$t" >/dev/null || echo "missing $t"; done
python3 --version; perl -e 'print "perl $^V\n"'`,
    );
    expect(r.output.trim().split('\n')).toEqual([
      `Python ${recipe.provides?.versions.python}`,
      `perl v${recipe.provides?.versions.perl}`,
    ]);
  });

  it("a python job's pip installs as on Travis (Debian's PEP 668 refusal lifted in the job's env)", async () => {
    const config = [
      'language: python',
      'install:',
      '  - mkdir -p pkg && printf \'print("hello ok")\\n\' > pkg/hello.py',
      `  - printf 'from setuptools import setup\\nsetup(name="hello", version="1", py_modules=["hello"])\\n' > pkg/setup.py`,
      '  - pip install -q --no-index --no-build-isolation ./pkg',
      'script: cd / && python3 -c "import hello"',
      '',
    ].join('\n');
    const r = await run('amd64', 'debian-bookworm-build', 'python-pip', jobScript(config));
    expect(r.output).not.toContain('externally-managed-environment');
    expect(r.output).toContain('hello ok');
    expect(r.exitCode).toBe(JOB_EXIT.passed);
  });

  it('compiles and runs C with gcc and C++ with clang++', async () => {
    const r = await run(
      'amd64',
      'debian-bookworm-build',
      'build-compile',
      `printf 'int main(){return 42;}' > /tmp/a.c && gcc /tmp/a.c -o /tmp/a; /tmp/a; echo "gcc $?"
printf '#include <iostream>\\nint main(){std::cout<<"clang++ ok"<<std::endl;}' > /tmp/b.cc && clang++ /tmp/b.cc -o /tmp/b && /tmp/b`,
    );
    expect(r.output).toBe('gcc 42\nclang++ ok\n');
    expect(r.exitCode).toBe(0);
  });

  it('keeps setuid bits through the owner shift; under no-new-privileges they do not elevate', async () => {
    // `passwd -S` reads /etc/shadow (root:shadow 0640): as nobody it only could if setuid root took
    // effect, which noNewPrivileges prevents (docs/security.md); it then prints a bare P.
    const r = await run(
      'amd64',
      'debian-bookworm-build',
      'build-setuid',
      'stat -c %A /usr/bin/passwd; grep NoNewPrivs /proc/self/status; setpriv --reuid=65534 --regid=65534 --clear-groups passwd -S nobody',
    );
    expect(r.exitCode).toBe(0);
    const [mode, nnp, status] = r.output.trim().split('\n');
    expect(mode).toBe('-rwsr-xr-x');
    expect(nnp).toMatch(/^NoNewPrivs:\s+1$/);
    expect(status).toMatch(/^nobody P\b/);
  });
});
