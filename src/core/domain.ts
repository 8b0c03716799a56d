/**
 * The words archway uses, in code, API, metrics and docs alike:
 *
 * - job: one run of a script on one arch in one image, with its limits; it may take several attempts.
 * - attempt: one try of a job on one node; a host failure ends an attempt, not the job.
 * - node: one worker process on one host, serving one arch (natively or emulated).
 * - slot: room for one running job on a node.
 * - pool: all nodes of one arch, scaled together.
 * - image: a named root filesystem for one arch (`busybox`, `debian-bookworm`), stored as a
 *   read-only btrfs subvolume whose owners are already shifted into the unprivileged range.
 * - digest: `sha256:<hex>` that names one version of an image for one arch.
 * - container: an OCI container made from a writable snapshot of an image; used by one job only.
 * - warm container: a container created and started with an idle init before any job asks for it;
 *   a job is an exec into it, and it is destroyed after that one job.
 */
import { z } from 'zod';
import { InvalidInputError } from './errors/invalid-input-error.ts';

export const ARCHES = ['amd64', 'arm64', 'ppc64le', 's390x'] as const;
export const Arch = z.enum(ARCHES);
export type Arch = z.infer<typeof Arch>;

/** What each arch is called by the kernel (`uname -m`), Debian, and qemu-user's binfmt entry. */
export const ARCH_INFO: Record<Arch, { uname: string; debian: string; qemu: string; bigEndian: boolean }> = {
  amd64: { uname: 'x86_64', debian: 'amd64', qemu: 'x86_64', bigEndian: false },
  arm64: { uname: 'aarch64', debian: 'arm64', qemu: 'aarch64', bigEndian: false },
  ppc64le: { uname: 'ppc64le', debian: 'ppc64el', qemu: 'ppc64le', bigEndian: false },
  s390x: { uname: 's390x', debian: 's390x', qemu: 's390x', bigEndian: true },
};

const ARCH_ALIASES: Record<string, Arch> = {
  amd64: 'amd64',
  x86_64: 'amd64',
  x64: 'amd64',
  arm64: 'arm64',
  aarch64: 'arm64',
  ppc64le: 'ppc64le',
  ppc64el: 'ppc64le',
  power: 'ppc64le',
  s390x: 's390x',
};

/** Accepts an arch or one of its aliases (x86_64, x64, aarch64, ppc64el, power); anything else is an error. */
export function parseArch(value: string, field = 'arch'): Arch {
  const arch = ARCH_ALIASES[value.trim().toLowerCase()];
  if (!arch) {
    throw new InvalidInputError(
      field,
      `unknown arch '${value}': expected one of ${ARCHES.join(', ')} (aliases: x86_64, x64, aarch64, ppc64el, power)`,
    );
  }
  return arch;
}

/** The arch of the machine this process runs on, or undefined for one archway does not serve. */
export function hostArch(): Arch | undefined {
  switch (process.arch) {
    case 'x64':
      return 'amd64';
    case 'arm64':
      return 'arm64';
    case 'ppc64':
      return 'ppc64le';
    case 's390x':
      return 's390x';
    default:
      return undefined;
  }
}

/** An image name: a catalog name, never a path. */
export const ImageName = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9._-]{0,62}$/,
    'an image name is 1-63 characters of a-z, 0-9, ".", "_" and "-", starting with a letter or digit',
  )
  .refine((s) => !s.includes('..'), 'an image name may not contain ".."');
export type ImageName = z.infer<typeof ImageName>;

export const Digest = z
  .string()
  .regex(/^sha256:[0-9a-f]{64}$/, 'a digest is sha256: followed by 64 hex digits');
export type Digest = z.infer<typeof Digest>;

/** An image reference: `name` (its current version) or `name@sha256:...` (that version). */
export const ImageRef = z.string().transform((s, ctx) => {
  const [name, digest, ...rest] = s.split('@');
  const n = ImageName.safeParse(name);
  const d = digest === undefined ? undefined : Digest.safeParse(digest);
  if (rest.length > 0 || !n.success || (d && !d.success)) {
    ctx.addIssue({
      code: 'custom',
      message: `invalid image '${s}': ${!n.success ? (n.error.issues[0]?.message ?? 'bad name') : 'expected name@sha256:<64 hex>'}`,
    });
    return z.NEVER;
  }
  return d?.success ? { name: n.data, digest: d.data } : { name: n.data };
});
export type ImageRef = z.output<typeof ImageRef>;

/**
 * The smallest limits the kernel can apply to a container that still starts (measured with runc
 * 1.1 on arm64 through qemu-user, the hungriest case): below 16 MiB runc cannot set the memory
 * limit, and since every job runs under the exec wrapper shell (one more emulated process) a
 * `sh -c 'ls / | wc -l'` at 16 MiB was OOM-killed in 2 of 6 runs on an idle host, at 24 MiB in
 * none: 32 MiB leaves room. runc's own init threads count against pids; the CFS quota cannot be
 * under 1 ms per 100 ms period.
 */
export const MIN_LIMITS = { cpus: 0.01, memoryMiB: 32, pids: 16, diskMiB: 1 } as const;

/** Limits of one job's container. Absent ones take the defaults below; each is bounded by the operator's ceiling. */
export const ResourceLimits = z.object({
  /** CPUs the job may use (cgroup cpu quota). Default 2. */
  cpus: z
    .number()
    .min(MIN_LIMITS.cpus, 'at least 0.01 (the smallest CPU quota the kernel takes: 1 ms per 100 ms)')
    .max(256)
    .optional(),
  /** Memory in MiB, swap included. Default 2048. */
  memoryMiB: z
    .int()
    .min(MIN_LIMITS.memoryMiB, 'at least 32 MiB (a container cannot start with less)')
    .max(1_048_576)
    .optional(),
  /** Maximum number of processes and threads. Default 1024. */
  pids: z
    .int()
    .min(MIN_LIMITS.pids, "at least 16 (the runtime's own threads count against it)")
    .max(4_194_304)
    .optional(),
  /** Bytes the job may write into its snapshot, in MiB (btrfs qgroup). Default 4096. */
  diskMiB: z.int().min(MIN_LIMITS.diskMiB, 'at least 1 MiB').max(16_777_216).optional(),
});
export type ResourceLimits = z.infer<typeof ResourceLimits>;

/** Resource limits with every value set. */
export type Limits = { [K in keyof ResourceLimits]-?: NonNullable<ResourceLimits[K]> };

/**
 * What a job gets when it does not ask (or less, where the operator's ceiling is lower). 4 GiB of
 * disk, so that the default 2 slots of each of the 4 arches (32 GiB) fit the default 64 GiB pool.
 */
export const DEFAULT_LIMITS: Limits = { cpus: 2, memoryMiB: 2048, pids: 1024, diskMiB: 4096 };

/**
 * Why a job ended other than by its script's own exit. `bad_spec`: its spec cannot run (an image
 * nobody holds, limits over the node's ceilings); `source`: its source could not be fetched or
 * placed. Both are the job's own failures and never count against the node (docs/architecture.md).
 */
export const EndReason = z.enum([
  'timeout',
  'silence',
  'log_limit',
  'oom',
  'canceled',
  'superseded',
  'infra',
  'bad_spec',
  'source',
]);
export type EndReason = z.infer<typeof EndReason>;

/** The network a job's container gets: `none` (only loopback) or `egress` (outbound only; not yet served). */
export const NetworkMode = z.enum(['none', 'egress']);
export type NetworkMode = z.infer<typeof NetworkMode>;

/** A job id: also part of container names and the container's hostname, so a conservative charset. */
export const JobId = z
  .string()
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/,
    'a job id is 1-63 characters of A-Z, a-z, 0-9, "_", "." and "-"',
  );
export type JobId = z.infer<typeof JobId>;
