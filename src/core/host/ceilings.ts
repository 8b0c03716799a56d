import { readFileSync, statfsSync } from 'node:fs';
import { availableParallelism, totalmem } from 'node:os';
import { DEFAULT_LIMITS, type Limits, type ResourceLimits } from '../domain.ts';
import { InvalidInputError } from '../errors/invalid-input-error.ts';

/** The most of each resource one job may ask for: the operator's ceiling. */
export type Ceilings = Limits;

/** The setting that sets each ceiling (named in every refusal, so a user knows whom to ask). */
export const CEILING_SETTINGS: Record<keyof Limits, string> = {
  cpus: 'ARCHWAY_MAX_CPUS',
  memoryMiB: 'ARCHWAY_MAX_MEMORY_MIB',
  pids: 'ARCHWAY_MAX_PIDS',
  diskMiB: 'ARCHWAY_MAX_DISK_MIB',
};

const UNITS: Record<keyof Limits, string> = { cpus: ' CPUs', memoryMiB: ' MiB', pids: '', diskMiB: ' MiB' };

/**
 * The share of the host one job may take when the operator sets no ceiling: pids are shared by
 * every process of the host (kernel.pid_max), and the pool by every container and image on it.
 */
export const CEILING_SHARES = { pids: 1 / 8, disk: 1 / 4 } as const;

export interface HostCeilingsOptions {
  /** The btrfs pool whose size bounds the disk ceiling. */
  poolPath: string;
  /** Pool size to assume when the path cannot be measured (not made yet), in GiB. */
  poolSizeGiB: number;
  /** The operator's ceilings (ARCHWAY_MAX_*); each one set replaces the host-derived value. */
  set: Partial<Limits>;
}

/**
 * The ceilings of this host: what the operator set, else derived from the host the process runs
 * on: its CPUs, its memory, an eighth of `kernel.pid_max`, a quarter of the pool.
 */
export function hostCeilings(o: HostCeilingsOptions): Ceilings {
  const MiB = 1024 * 1024;
  let poolBytes = o.poolSizeGiB * 1024 * MiB;
  try {
    const s = statfsSync(o.poolPath);
    poolBytes = s.blocks * s.bsize;
  } catch {
    // Not there yet: a worker makes it at start with ARCHWAY_POOL_SIZE_GIB.
  }
  let pidMax = 32_768;
  try {
    pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8').trim()) || pidMax;
  } catch {
    // Not Linux: the kernel's default.
  }
  return {
    cpus: o.set.cpus ?? availableParallelism(),
    memoryMiB: o.set.memoryMiB ?? Math.floor(totalmem() / MiB),
    pids: o.set.pids ?? Math.floor(pidMax * CEILING_SHARES.pids),
    diskMiB: o.set.diskMiB ?? Math.floor((poolBytes * CEILING_SHARES.disk) / MiB),
  };
}

/** The operator's ceilings from a config that has the ARCHWAY_MAX_* settings. */
export function ceilingsSet(c: {
  ARCHWAY_MAX_CPUS?: number | undefined;
  ARCHWAY_MAX_MEMORY_MIB?: number | undefined;
  ARCHWAY_MAX_PIDS?: number | undefined;
  ARCHWAY_MAX_DISK_MIB?: number | undefined;
}): Partial<Limits> {
  return {
    ...(c.ARCHWAY_MAX_CPUS === undefined ? {} : { cpus: c.ARCHWAY_MAX_CPUS }),
    ...(c.ARCHWAY_MAX_MEMORY_MIB === undefined ? {} : { memoryMiB: c.ARCHWAY_MAX_MEMORY_MIB }),
    ...(c.ARCHWAY_MAX_PIDS === undefined ? {} : { pids: c.ARCHWAY_MAX_PIDS }),
    ...(c.ARCHWAY_MAX_DISK_MIB === undefined ? {} : { diskMiB: c.ARCHWAY_MAX_DISK_MIB }),
  };
}

/**
 * Refuses a request over a ceiling: an InvalidInputError naming the field (`<field>.memoryMiB`),
 * the value, the ceiling and the setting that sets it.
 */
export function checkCeilings(
  resources: ResourceLimits,
  ceilings: Ceilings,
  o: { field?: (k: keyof Limits) => string; where?: string } = {},
): void {
  for (const k of Object.keys(CEILING_SETTINGS) as (keyof Limits)[]) {
    const v = resources[k];
    if (v !== undefined && v > ceilings[k]) {
      throw new InvalidInputError(
        o.field ? o.field(k) : `resources.${k}`,
        `${v}${UNITS[k]} is over ${o.where ?? "this installation's"} ceiling of ${ceilings[k]}${UNITS[k]} (${CEILING_SETTINGS[k]})`,
      );
    }
  }
}

/** Every limit set: what the job asked for, else the default, lowered to the ceiling where that is lower. */
export function limitsWithin(resources: ResourceLimits, ceilings: Ceilings): Limits {
  return {
    cpus: resources.cpus ?? Math.min(DEFAULT_LIMITS.cpus, ceilings.cpus),
    memoryMiB: resources.memoryMiB ?? Math.min(DEFAULT_LIMITS.memoryMiB, ceilings.memoryMiB),
    pids: resources.pids ?? Math.min(DEFAULT_LIMITS.pids, ceilings.pids),
    diskMiB: resources.diskMiB ?? Math.min(DEFAULT_LIMITS.diskMiB, ceilings.diskMiB),
  };
}
