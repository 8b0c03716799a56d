import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Arch, HostRequirementError } from '../../src/core/index.ts';
import { CAPABILITIES } from '../../workers/oci-spec.ts';
import {
  compileSeccompProfile,
  DEFAULT_SECCOMP_PROFILE,
  DENIED_SYSCALLS,
  loadSeccompProfile,
  type OciSeccomp,
  type OciSeccompArg,
  type OciSeccompSyscall,
  SeccompProfile,
} from '../../workers/seccomp-profile.ts';

let debian: SeccompProfile;
let dir: string;
beforeAll(async () => {
  // The real file of golang-github-containers-common, as the worker reads it.
  debian = await loadSeccompProfile(DEFAULT_SECCOMP_PROFILE);
  dir = await mkdtemp(join(tmpdir(), 'seccomp-unit-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const compile = (
  hostArch: Arch,
  p: SeccompProfile = debian,
  capabilities = CAPABILITIES,
  kernel = '6.1.0-13-amd64',
) => compileSeccompProfile(p, { hostArch, capabilities, kernel });

const rulesFor = (s: OciSeccomp, name: string) => s.syscalls.filter((r) => r.names.includes(name));

/** What a rule does to one call, as the kernel's filter would (args are 64-bit registers). */
function matches(rule: OciSeccompSyscall, args: bigint[]): boolean {
  return (rule.args ?? []).every((a: OciSeccompArg) => {
    const v = args[a.index] ?? 0n;
    const x = BigInt(a.value);
    const y = BigInt(a.valueTwo ?? 0);
    switch (a.op) {
      case 'SCMP_CMP_EQ':
        return v === x;
      case 'SCMP_CMP_NE':
        return v !== x;
      case 'SCMP_CMP_MASKED_EQ':
        return (v & x) === y;
      case 'SCMP_CMP_LT':
        return v < x;
      case 'SCMP_CMP_LE':
        return v <= x;
      case 'SCMP_CMP_GT':
        return v > x;
      case 'SCMP_CMP_GE':
        return v >= x;
      default: {
        const never: never = a.op;
        return never;
      }
    }
  });
}

/** The action of a call; throws when the rules for it overlap (libseccomp does not order them). */
function decide(s: OciSeccomp, name: string, args: bigint[]): string {
  const hit = rulesFor(s, name).filter((r) => matches(r, args));
  if (hit.length > 1) throw new Error(`${name}(${args.join(', ')}) matches ${hit.length} rules`);
  const r = hit[0];
  if (!r) return `default ${s.defaultErrnoRet}`;
  return r.action === 'SCMP_ACT_ERRNO' ? `errno ${r.errnoRet}` : r.action;
}

describe('converting the containers-common profile', () => {
  it('lists the host arch and its compat ABIs, whatever the container arch', () => {
    // Not x32: see SECCOMP_ARCHES (each ABI costs every runc run and exec; x32 calls are refused without it).
    expect(compile('amd64').architectures).toEqual(['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86']);
    expect(compile('arm64').architectures).toEqual(['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM']);
    // containers-common's archMap has no ppc64le entry: the host's own arch is listed all the same.
    expect(compile('ppc64le').architectures).toEqual(['SCMP_ARCH_PPC64LE']);
    expect(compile('s390x').architectures).toEqual(['SCMP_ARCH_S390X', 'SCMP_ARCH_S390']);
  });

  it('keeps the default action and errno of the profile (ENOSYS for unknown calls)', () => {
    expect(compile('amd64')).toMatchObject({ defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: 38 });
  });

  it("includes a rule by the host's arch: arch_prctl on amd64, s390_runtime_instr on s390x, sync_file_range2 on ppc64le and arm64", () => {
    const has = (a: Arch, n: string) => rulesFor(compile(a), n).some((r) => r.action === 'SCMP_ACT_ALLOW');
    expect(has('amd64', 'arch_prctl')).toBe(true);
    expect(has('arm64', 'arch_prctl')).toBe(false);
    expect(has('s390x', 's390_runtime_instr')).toBe(true);
    expect(has('amd64', 's390_runtime_instr')).toBe(false);
    expect(has('ppc64le', 'sync_file_range2')).toBe(true);
    expect(has('arm64', 'sync_file_range2')).toBe(true);
    expect(has('amd64', 'sync_file_range2')).toBe(false);
  });

  it('evaluates caps against the container capability set: chroot allowed (CAP_SYS_CHROOT), reboot-like admin calls not', () => {
    const s = compile('amd64');
    expect(rulesFor(s, 'chroot').map((r) => r.action)).toEqual(['SCMP_ACT_ALLOW']);
    // Without CAP_SYS_ADMIN: the profile's EPERM branch, not its allow branch.
    expect(rulesFor(s, 'setdomainname')).toEqual([
      expect.objectContaining({ action: 'SCMP_ACT_ERRNO', errnoRet: 1 }),
    ]);
    expect(rulesFor(s, 'acct')).toEqual([expect.objectContaining({ action: 'SCMP_ACT_ERRNO' })]);
    // With CAP_SYS_CHROOT gone, the excludes branch applies instead.
    const noChroot = compile(
      'amd64',
      debian,
      CAPABILITIES.filter((c) => c !== 'CAP_SYS_CHROOT'),
    );
    expect(rulesFor(noChroot, 'chroot')).toEqual([expect.objectContaining({ action: 'SCMP_ACT_ERRNO' })]);
  });

  it('honours minKernel in includes and excludes', () => {
    const p = SeccompProfile.parse({
      defaultAction: 'SCMP_ACT_ERRNO',
      syscalls: [
        { names: ['newcall'], action: 'SCMP_ACT_ALLOW', includes: { minKernel: '5.10' } },
        { names: ['oldcall'], action: 'SCMP_ACT_ALLOW', excludes: { minKernel: '5.10' } },
      ],
    });
    const names = (k: string) => compile('amd64', p, CAPABILITIES, k).syscalls.flatMap((r) => r.names);
    expect(names('6.18.44')).toContain('newcall');
    expect(names('6.18.44')).not.toContain('oldcall');
    expect(names('4.19.0')).toContain('oldcall');
    expect(names('4.19.0')).not.toContain('newcall');
  });

  it('denies every call of DENIED_SYSCALLS with EPERM, and nothing else allows them', () => {
    const s = compile('amd64');
    for (const name of [...DENIED_SYSCALLS, 'userfaultfd', 'io_uring_setup', 'keyctl', 'mount', 'bpf']) {
      expect(rulesFor(s, name), name).toEqual([
        expect.objectContaining({ action: 'SCMP_ACT_ERRNO', errnoRet: 1 }),
      ]);
    }
  });

  it('clone3 returns ENOSYS, so that glibc falls back to clone', () => {
    expect(decide(compile('amd64'), 'clone3', [])).toBe('errno 38');
  });

  it.each([
    ['amd64', 0],
    ['arm64', 0],
    ['ppc64le', 0],
    ['s390x', 1],
  ] as const)(
    '%s host: clone and unshare with CLONE_NEWUSER get EPERM (clone flags in arg %i), without it they run',
    (arch, flagsArg) => {
      const s = compile(arch);
      const NEWUSER = 0x10000000n;
      const thread = 0x3d0f00n; // CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|...: what pthread_create passes
      const cloneArgs = (flags: bigint) => (flagsArg === 0 ? [flags, 0n] : [0n, flags]);
      expect(decide(s, 'clone', cloneArgs(thread))).toBe('SCMP_ACT_ALLOW');
      expect(decide(s, 'clone', cloneArgs(17n))).toBe('SCMP_ACT_ALLOW'); // fork: SIGCHLD
      expect(decide(s, 'clone', cloneArgs(NEWUSER | 17n))).toBe('errno 1');
      expect(decide(s, 'clone', cloneArgs(NEWUSER | 0x40000000n | 17n))).toBe('errno 1');
      expect(decide(s, 'unshare', [NEWUSER])).toBe('errno 1');
      expect(decide(s, 'unshare', [0x20000n])).toBe('SCMP_ACT_ALLOW'); // CLONE_NEWNS: the kernel refuses it without CAP_SYS_ADMIN
    },
  );

  it('socket: the allowed families in any spelling of the int; AF_PACKET and AF_VSOCK EPERM; the rest the default', () => {
    const s = compile('amd64');
    // The kernel reads the low 32 bits of the family: 0x1_0000_0028 is AF_VSOCK.
    for (const family of [17n, 40n, 0x1_0000_0011n, 0xffff_ffff_0000_0028n])
      expect(decide(s, 'socket', [family, 1n, 0n]), String(family)).toBe('errno 1');
    for (const family of [1n, 2n, 10n, 16n, 0x1_0000_0002n, 0xffff_ffff_0000_000an])
      expect(decide(s, 'socket', [family, 3n, 0n]), String(family)).toBe('SCMP_ACT_ALLOW');
    for (const family of [0n, 21n, 29n, 30n, 31n, 38n, 44n, 0xffff_ffffn])
      expect(decide(s, 'socket', [family, 5n, 0n]), String(family)).toBe('default 38');
  });

  it("amd64 host: i386's socketcall gets EPERM (the family is out of reach there); the profile's rule elsewhere", () => {
    expect(rulesFor(compile('amd64'), 'socketcall')).toEqual([
      { names: ['socketcall'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 },
    ]);
    expect(rulesFor(compile('arm64'), 'socketcall')).toEqual([
      expect.objectContaining({ action: 'SCMP_ACT_ALLOW' }),
    ]);
    // Before any socket rule: libseccomp derives socketcall rules from those on x86, and they
    // collide with each other (EEXIST, runc refuses the container) unless socketcall's is already in.
    const s = compile('amd64').syscalls;
    const first = (n: string) => s.findIndex((r) => r.names.includes(n));
    expect(first('socketcall')).toBeLessThan(first('socket'));
  });

  it('replaces the profile rules of the names it overrides, leaving no overlap for any name', () => {
    const s = compile('amd64');
    const unconditional = new Map<string, number>();
    for (const r of s.syscalls)
      if (!r.args) for (const n of r.names) unconditional.set(n, (unconditional.get(n) ?? 0) + 1);
    // An unconditional rule beside another rule for the same call would make libseccomp drop one of them.
    for (const r of s.syscalls)
      for (const n of r.names) expect(unconditional.get(n) ?? 0, n).toBeLessThanOrEqual(r.args ? 0 : 1);
    // Allowed and also denied without CAP_SYS_ADMIN in the file: libseccomp keeps the first, so do we.
    expect(decide(s, 'setns', [])).toBe('SCMP_ACT_ALLOW');
  });
});

describe('reading a profile file', () => {
  it('a missing file is a HostRequirementError naming the file and the package', async () => {
    const err = await loadSeccompProfile(DEFAULT_SECCOMP_PROFILE.replace('seccomp', 'missing')).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(HostRequirementError);
    expect((err as Error).message).toMatch(
      /seccomp profile \/usr\/share\/containers\/missing\.json is missing/,
    );
    const own = await loadSeccompProfile(join(dir, 'gone.json')).catch((e: unknown) => e);
    expect((own as Error).message).toMatch(
      /gone\.json is missing.*ARCHWAY_SECCOMP_PROFILE.*golang-github-containers-common/,
    );
  });

  it('bad JSON and a wrong shape name the file and where it is wrong', async () => {
    const bad = join(dir, 'bad.json');
    await writeFile(bad, '{"defaultAction": ');
    await expect(loadSeccompProfile(bad)).rejects.toThrow(
      /bad\.json is not a Docker-format seccomp profile: invalid JSON/,
    );
    await writeFile(
      bad,
      JSON.stringify({ defaultAction: 'SCMP_ACT_ERRNO', syscalls: [{ action: 'SCMP_ACT_ALLOW' }] }),
    );
    await expect(loadSeccompProfile(bad)).rejects.toThrow(/syscalls\.0: a syscall rule needs names/);
    await writeFile(bad, JSON.stringify({ syscalls: [] }));
    await expect(loadSeccompProfile(bad)).rejects.toThrow(/defaultAction/);
  });

  it('reads the real containers-common file as it is installed', async () => {
    const text = await readFile(DEFAULT_SECCOMP_PROFILE, 'utf8');
    expect(debian.syscalls?.length).toBe((JSON.parse(text) as { syscalls: unknown[] }).syscalls.length);
  });
});
