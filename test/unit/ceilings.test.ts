import { availableParallelism, totalmem } from 'node:os';
import { describe, expect, it } from 'vitest';
import { compareLogIds } from '../../queue/index.ts';
import {
  checkCeilings,
  DEFAULT_LIMITS,
  hostCeilings,
  InvalidInputError,
  limitsWithin,
  ResourceLimits,
} from '../../src/core/index.ts';

const ceilings = { cpus: 4, memoryMiB: 8192, pids: 2048, diskMiB: 1000 };

describe('ceilings', () => {
  it('without settings: the cores, the memory, an eighth of pid_max, a quarter of the pool', () => {
    // /nonexistent cannot be measured: the pool size given stands in for it.
    const c = hostCeilings({ poolPath: '/nonexistent', poolSizeGiB: 64, set: {} });
    expect(c.cpus).toBe(availableParallelism());
    expect(c.memoryMiB).toBe(Math.floor(totalmem() / 2 ** 20));
    expect(c.diskMiB).toBe(16 * 1024);
    expect(c.pids).toBeGreaterThanOrEqual(32768 / 8);
  });

  it("the operator's settings replace the host's values, one by one", () => {
    const c = hostCeilings({ poolPath: '/nonexistent', poolSizeGiB: 64, set: { pids: 300, cpus: 64 } });
    expect(c).toMatchObject({ pids: 300, cpus: 64, diskMiB: 16 * 1024 });
  });

  it('a value over a ceiling names the field, the ceiling and the setting; at the ceiling is fine', () => {
    expect(() => checkCeilings({ memoryMiB: 8193 }, ceilings)).toThrow(InvalidInputError);
    expect(() => checkCeilings({ memoryMiB: 8193 }, ceilings)).toThrow(
      "resources.memoryMiB: 8193 MiB is over this installation's ceiling of 8192 MiB (ARCHWAY_MAX_MEMORY_MIB)",
    );
    expect(() =>
      checkCeilings({ cpus: 4.5 }, ceilings, { field: (k) => `--${k}`, where: "this host's" }),
    ).toThrow("--cpus: 4.5 CPUs is over this host's ceiling of 4 CPUs (ARCHWAY_MAX_CPUS)");
    expect(() => checkCeilings({ ...ceilings }, ceilings)).not.toThrow();
  });

  it('a job that asks for nothing gets the defaults, lowered to a ceiling under them', () => {
    expect(limitsWithin({}, { cpus: 256, memoryMiB: 1e6, pids: 1e6, diskMiB: 1e6 })).toEqual(DEFAULT_LIMITS);
    expect(limitsWithin({}, ceilings)).toEqual({ ...DEFAULT_LIMITS, diskMiB: 1000 });
    expect(limitsWithin({ diskMiB: 10 }, ceilings).diskMiB).toBe(10);
  });

  it('the kernel minima are part of the schema', () => {
    expect(ResourceLimits.safeParse({ memoryMiB: 15 }).success).toBe(false);
    expect(ResourceLimits.safeParse({ pids: 15 }).success).toBe(false);
    expect(ResourceLimits.safeParse({ cpus: 0.009 }).success).toBe(false);
    expect(ResourceLimits.safeParse({ memoryMiB: 32, pids: 16, cpus: 0.01, diskMiB: 1 }).success).toBe(true);
  });
});

describe('log entry ids', () => {
  it('order by time, then sequence, as numbers', () => {
    expect(compareLogIds('1700000000000-2', '1700000000000-10')).toBeLessThan(0);
    expect(compareLogIds('1700000000001-0', '1700000000000-99')).toBeGreaterThan(0);
    expect(compareLogIds('0-0', '0-0')).toBe(0);
  });
});
