import { readFile } from 'node:fs/promises';
import { release } from 'node:os';
import { z } from 'zod';
import { type Arch, HostRequirementError, hostArch } from '../src/core/index.ts';

/**
 * The seccomp filter of every container: Debian's maintained containers-common profile (the
 * podman default, derived from Docker's), converted to the OCI `linux.seccomp` form runc takes,
 * with archway's denials on top. docs/security.md says what is denied and why.
 */

/** Where Debian's golang-github-containers-common puts the podman default profile. */
export const DEFAULT_SECCOMP_PROFILE = '/usr/share/containers/seccomp.json';
const PACKAGE_FIX = 'apt-get install golang-github-containers-common (or run ops/setup-host.sh)';

const Action = z.enum([
  'SCMP_ACT_KILL',
  'SCMP_ACT_KILL_PROCESS',
  'SCMP_ACT_KILL_THREAD',
  'SCMP_ACT_TRAP',
  'SCMP_ACT_ERRNO',
  'SCMP_ACT_TRACE',
  'SCMP_ACT_ALLOW',
  'SCMP_ACT_LOG',
]);
const Op = z.enum([
  'SCMP_CMP_NE',
  'SCMP_CMP_LT',
  'SCMP_CMP_LE',
  'SCMP_CMP_EQ',
  'SCMP_CMP_GE',
  'SCMP_CMP_GT',
  'SCMP_CMP_MASKED_EQ',
]);
const u64 = z.number().int().nonnegative();
const Filter = z
  .object({
    caps: z.array(z.string()).nullish(),
    arches: z.array(z.string()).nullish(),
    minKernel: z
      .string()
      .regex(/^\d+\.\d+/, 'a kernel version such as 4.8')
      .nullish(),
  })
  .nullish();
const ProfileArg = z.object({
  index: z.number().int().min(0).max(5),
  value: u64,
  valueTwo: u64.optional(),
  op: Op,
});
const ProfileSyscall = z
  .object({
    names: z.array(z.string().min(1)).nullish(),
    name: z.string().min(1).nullish(),
    action: Action,
    errnoRet: z.number().int().nonnegative().nullish(),
    args: z.array(ProfileArg).nullish(),
    includes: Filter,
    excludes: Filter,
  })
  .refine((s) => (s.names?.length ?? 0) > 0 || s.name, 'a syscall rule needs names (or name)');

/** A seccomp profile in Docker's format (what containers-common, Docker and podman ship). */
export const SeccompProfile = z.object({
  defaultAction: Action,
  defaultErrnoRet: z.number().int().nonnegative().nullish(),
  architectures: z.array(z.string()).nullish(),
  archMap: z
    .array(z.object({ architecture: z.string(), subArchitectures: z.array(z.string()).nullish() }))
    .nullish(),
  syscalls: z.array(ProfileSyscall).nullish(),
});
export type SeccompProfile = z.infer<typeof SeccompProfile>;

export interface OciSeccompArg {
  index: number;
  value: number;
  valueTwo?: number;
  op: z.infer<typeof Op>;
}
export interface OciSeccompSyscall {
  names: string[];
  action: z.infer<typeof Action>;
  errnoRet?: number;
  args?: OciSeccompArg[];
}
/** The OCI runtime spec's `linux.seccomp`. */
export interface OciSeccomp {
  defaultAction: z.infer<typeof Action>;
  defaultErrnoRet?: number;
  architectures: string[];
  syscalls: OciSeccompSyscall[];
}

const EPERM = 1;
const ENOSYS = 38;
const CLONE_NEWUSER = 0x10000000;
const AF_PACKET = 17;
const AF_VSOCK = 40;

/**
 * The seccomp architectures of each host arch: its own and the compat ABIs its kernel also runs.
 * Not x32: it has next to no userland, each ABI listed costs every runc run and exec ~6 ms of CPU
 * (docs/benchmarks.md), and an x32 call on an x86_64 filter without it is refused, never allowed.
 */
export const SECCOMP_ARCHES: Record<Arch, string[]> = {
  amd64: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86'],
  arm64: ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM'],
  ppc64le: ['SCMP_ARCH_PPC64LE'],
  s390x: ['SCMP_ARCH_S390X', 'SCMP_ARCH_S390'],
};

/**
 * Calls archway denies whatever the profile says (the profile's rules for these names are
 * replaced): kernel attack surface a CI job has no use for, and ways out of the container.
 */
export const DENIED_SYSCALLS = [
  // io_uring: a large share of recent kernel privilege escalations; no build tool needs it.
  'io_uring_setup',
  'io_uring_enter',
  'io_uring_register',
  // userfaultfd stalls the kernel mid-copy: the building block of many race exploits.
  'userfaultfd',
  'perf_event_open',
  'bpf',
  // Kernel keyrings are counted per host uid: one job's keys would exhaust another's quota.
  'add_key',
  'keyctl',
  'request_key',
  'init_module',
  'finit_module',
  'delete_module',
  'kexec_load',
  'kexec_file_load',
  // Mounts: none is needed inside a job (the kernel refuses them without CAP_SYS_ADMIN anyway).
  'mount',
  'umount',
  'umount2',
  'fsopen',
  'fsconfig',
  'fsmount',
  'fspick',
  'move_mount',
  'mount_setattr',
  'pivot_root',
  'open_by_handle_at',
  // The host kernel's log.
  'syslog',
] as const;

/** Socket families a job may open: what builds and tests use (netlink for `ip` and getaddrinfo). */
export const ALLOWED_SOCKET_FAMILIES = { AF_UNIX: 1, AF_INET: 2, AF_INET6: 10, AF_NETLINK: 16 } as const;
/**
 * Families refused with EPERM, to say why: raw link-layer access, and vsock, which reaches the
 * hypervisor. Every other family gets the profile's default (ENOSYS), as an unknown call does.
 */
export const DENIED_SOCKET_FAMILIES = { AF_PACKET, AF_VSOCK } as const;

export interface CompileOptions {
  /** The arch of the kernel that runs the container: this host's, also for an emulated arch. */
  hostArch: Arch;
  /** The container's capabilities (its bounding set): the profile's `caps` rules are evaluated against them. */
  capabilities: readonly string[];
  /** The host kernel's release (`uname -r`), for `minKernel`. */
  kernel: string;
}

/**
 * Converts a Docker-format profile to the OCI form for one host, as Docker does, plus archway's
 * denials. Rules are evaluated for the host's arch, never the container's: under qemu-user the
 * kernel sees the host's syscalls (qemu translates the guest's), with the host's argument order
 * (s390x's clone takes its flags second, x86_64's first).
 */
export function compileSeccompProfile(p: SeccompProfile, o: CompileOptions): OciSeccomp {
  const goArch = o.hostArch; // archway's arch names are Go's, which the profile's `arches` use
  const caps = new Set(o.capabilities);
  const kernel = kernelVersion(o.kernel);
  const ours = archwayRules(o.hostArch);
  // archway's rules replace the profile's for the calls they name.
  const replaced = new Set(ours.flatMap((r) => r.names));
  const kept: OciSeccompSyscall[] = [];
  for (const s of p.syscalls ?? []) {
    const inc = s.includes;
    const exc = s.excludes;
    if (exc?.arches?.includes(goArch)) continue;
    if (exc?.caps?.some((c) => caps.has(c))) continue;
    if (exc?.minKernel && compareVersions(kernel, kernelVersion(exc.minKernel)) >= 0) continue;
    if (inc?.arches?.length && !inc.arches.includes(goArch)) continue;
    if (inc?.caps?.length && !inc.caps.every((c) => caps.has(c))) continue;
    if (inc?.minKernel && compareVersions(kernel, kernelVersion(inc.minKernel)) < 0) continue;
    const names = [...(s.names ?? []), ...(s.name ? [s.name] : [])].filter((n) => !replaced.has(n));
    if (names.length === 0) continue;
    kept.push({
      names,
      action: s.action,
      // Docker's default errno for an ERRNO rule without one is EPERM; TRACE keeps what it is given.
      ...(s.action === 'SCMP_ACT_ERRNO' ? { errnoRet: s.errnoRet ?? EPERM } : {}),
      ...(s.action === 'SCMP_ACT_TRACE' && s.errnoRet != null ? { errnoRet: s.errnoRet } : {}),
      ...(s.args?.length ? { args: s.args.map(ociArg) } : {}),
    });
  }
  const syscalls = [...firstUnconditionalWins(kept), ...ours];
  return {
    defaultAction: p.defaultAction,
    ...(p.defaultErrnoRet != null ? { defaultErrnoRet: p.defaultErrnoRet } : {}),
    architectures: architecturesOf(p, o.hostArch),
    syscalls,
  };
}

/**
 * Resolves a call named by several rules as libseccomp does, so that the emitted profile says
 * what the kernel will do: the first unconditional rule wins, and the call's other rules are
 * dropped. (containers-common allows `setns` and also denies it without CAP_SYS_ADMIN: allowed.)
 */
function firstUnconditionalWins(rules: OciSeccompSyscall[]): OciSeccompSyscall[] {
  const owner = new Map<string, OciSeccompSyscall>();
  for (const r of rules) if (!r.args) for (const n of r.names) if (!owner.has(n)) owner.set(n, r);
  return rules
    .map((r) => ({ ...r, names: r.names.filter((n) => (owner.get(n) ?? r) === r) }))
    .filter((r) => r.names.length > 0);
}

/** archway's rules. Each name's rules are disjoint and cover every value: libseccomp does not order overlapping rules. */
function archwayRules(host: Arch): OciSeccompSyscall[] {
  const errno = (names: string[], errnoRet: number, args?: OciSeccompArg[]): OciSeccompSyscall => ({
    names,
    action: 'SCMP_ACT_ERRNO',
    errnoRet,
    ...(args ? { args } : {}),
  });
  // s390's clone is clone(stack, flags, ...); every other arch's takes the flags first.
  const cloneFlags = host === 's390x' ? 1 : 0;
  const newUser = (index: number, set: boolean): OciSeccompArg => ({
    index,
    value: CLONE_NEWUSER,
    valueTwo: set ? CLONE_NEWUSER : 0,
    op: 'SCMP_CMP_MASKED_EQ',
  });
  return [
    // i386's socketcall(call, args) takes its arguments in memory, out of a filter's reach, and
    // libseccomp derives socketcall(SYS_SOCKET) rules from the socket rules below, which collide
    // unless an unconditional socketcall rule is in first. So on an amd64 host 32-bit programs open
    // sockets with the direct calls (Linux 4.3+) or not at all: i386 glibc's socket() fails.
    ...(host === 'amd64' ? [errno(['socketcall'], EPERM)] : []),
    errno([...DENIED_SYSCALLS], EPERM),
    // A nested user namespace gives the job every capability over new network and mount
    // namespaces (nf_tables, mounts of new filesystems): the way in for most container escapes.
    { names: ['unshare'], action: 'SCMP_ACT_ALLOW', args: [newUser(0, false)] },
    errno(['unshare'], EPERM, [newUser(0, true)]),
    { names: ['clone'], action: 'SCMP_ACT_ALLOW', args: [newUser(cloneFlags, false)] },
    errno(['clone'], EPERM, [newUser(cloneFlags, true)]),
    // clone3 passes its flags in memory, out of a filter's reach: ENOSYS makes glibc fall back to clone.
    errno(['clone3'], ENOSYS),
    // An allow-list: the rarer families (AF_ALG, AF_TIPC, AF_RDS, AF_CAN, ...) are kernel code with a
    // history of exploits that no build needs, and four rules cost runc less than a deny-list's 36.
    ...Object.values(ALLOWED_SOCKET_FAMILIES).map((f) => ({
      names: ['socket'],
      action: 'SCMP_ACT_ALLOW' as const,
      args: [low32(0, f)],
    })),
    ...Object.values(DENIED_SOCKET_FAMILIES).map((f) => errno(['socket'], EPERM, [low32(0, f)])),
  ];
}

/** Argument `index` is `value` in its low 32 bits, the part of an `int` the kernel reads. */
function low32(index: number, value: number): OciSeccompArg {
  return { index, value: 0xffffffff, valueTwo: value, op: 'SCMP_CMP_MASKED_EQ' };
}

function ociArg(a: z.infer<typeof ProfileArg>): OciSeccompArg {
  return {
    index: a.index,
    value: a.value,
    ...(a.valueTwo !== undefined ? { valueTwo: a.valueTwo } : {}),
    op: a.op,
  };
}

/**
 * archway's table of the host's ABIs, not the profile's archMap (containers-common's lacks ppc64le
 * and lists x32); a profile's explicit `architectures` are added.
 */
function architecturesOf(p: SeccompProfile, host: Arch): string[] {
  return [...new Set([...SECCOMP_ARCHES[host], ...(p.architectures ?? [])])];
}

function kernelVersion(s: string): number[] {
  return (s.match(/^(\d+)\.(\d+)/)?.slice(1) ?? ['0', '0']).map(Number);
}

function compareVersions(a: number[], b: number[]): number {
  return (a[0] ?? 0) - (b[0] ?? 0) || (a[1] ?? 0) - (b[1] ?? 0);
}

/** Reads and validates a profile file; a missing or unparsable one is a HostRequirementError naming it. */
export async function loadSeccompProfile(path: string): Promise<SeccompProfile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new HostRequirementError(
      `the seccomp profile ${path} ${code === 'ENOENT' ? 'is missing' : `cannot be read (${code ?? String(e)})`}`,
      path === DEFAULT_SECCOMP_PROFILE
        ? PACKAGE_FIX
        : `point ARCHWAY_SECCOMP_PROFILE at a readable profile, or unset it to use ${DEFAULT_SECCOMP_PROFILE} from golang-github-containers-common`,
    );
  }
  const bad = (why: string) =>
    new HostRequirementError(
      `the seccomp profile ${path} is not a Docker-format seccomp profile: ${why}`,
      path === DEFAULT_SECCOMP_PROFILE
        ? `apt-get install --reinstall golang-github-containers-common`
        : `fix the file, or unset ARCHWAY_SECCOMP_PROFILE for ${DEFAULT_SECCOMP_PROFILE}`,
    );
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw bad(`invalid JSON (${(e as Error).message})`);
  }
  const parsed = SeccompProfile.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw bad(`${issue?.path.join('.') || 'the top level'}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data;
}

const compiled = new Map<string, Promise<OciSeccomp>>();

/**
 * The compiled filter of this host's containers from the profile at `path`, read and compiled
 * once per process (never per container). It is the same for every arch the host serves: the
 * kernel that filters is the host's, emulated arch or not (see compileSeccompProfile).
 */
export function seccompFor(path: string, capabilities: readonly string[]): Promise<OciSeccomp> {
  const host = hostArch();
  if (!host)
    throw new HostRequirementError(
      `seccomp: this host's arch (${process.arch}) is not one archway runs on`,
      'use an amd64, arm64, ppc64le or s390x host',
    );
  const key = `${path}\n${capabilities.join(',')}`;
  let p = compiled.get(key);
  if (!p) {
    p = loadSeccompProfile(path).then((profile) =>
      compileSeccompProfile(profile, { hostArch: host, capabilities, kernel: release() }),
    );
    compiled.set(key, p);
    // A failed read is not cached: the operator may install the file and retry.
    p.catch(() => compiled.delete(key));
  }
  return p;
}
