import { describe, expect, it } from 'vitest';
import { describeJob } from '../../src/cli/commands/jobs.ts';
import { type JobRecord, parseConfig, WorkerConfig } from '../../src/core/index.ts';
import { effectiveLimits, formatLimit, limitsNote } from '../../workers/time-limits.ts';

describe('ARCHWAY_TIME_MULTIPLIERS', () => {
  const parse = (v: string) =>
    parseConfig(WorkerConfig, { ARCHWAY_TIME_MULTIPLIERS: v }).ARCHWAY_TIME_MULTIPLIERS;
  it('maps each arch (aliases too) to its factor; unset is none', () => {
    expect(parse('s390x:3, ppc64el:2,aarch64:1.5')).toEqual({ s390x: 3, ppc64le: 2, arm64: 1.5 });
    expect(parseConfig(WorkerConfig, {}).ARCHWAY_TIME_MULTIPLIERS).toEqual({});
  });
  it.each([
    ['s390x:0', /above 0/],
    ['s390x:-2', /above 0/],
    ['s390x:three', /not a number/],
    ['s390x:', /not a number/],
    ['s390x', /not a number/],
    ['s390x:3:4', /not a number/],
    ['mips:2', /unknown arch 'mips'/],
    ['s390x:1000', /at most 100/],
    ['s390x:2,s390x:3', /s390x is given twice/],
  ])('refuses %j, naming the setting', (v, why) => {
    expect(() => parse(v)).toThrow(/^ARCHWAY_TIME_MULTIPLIERS: invalid value/);
    expect(() => parse(v)).toThrow(why);
  });
});

describe('effective limits', () => {
  const spec = { timeoutSeconds: 600, silenceTimeoutSeconds: 120 };
  it('multiplies both limits, rounding up to whole seconds', () => {
    expect(effectiveLimits(spec, 3)).toEqual({
      timeoutSeconds: 1800,
      silenceTimeoutSeconds: 360,
      multiplier: 3,
    });
    expect(effectiveLimits({ timeoutSeconds: 5, silenceTimeoutSeconds: 3 }, 1.5)).toEqual({
      timeoutSeconds: 8,
      silenceTimeoutSeconds: 5,
      multiplier: 1.5,
    });
    expect(effectiveLimits(spec)).toEqual({ ...spec, multiplier: 1 });
  });
  it('says so in the log header, only when scaled', () => {
    expect(limitsNote(spec, effectiveLimits(spec, 3), { arch: 's390x', emulated: true })).toBe(
      '[archway] time limits x3 on s390x (emulated): 10m -> 30m, silence 2m -> 6m\n',
    );
    expect(limitsNote(spec, effectiveLimits(spec, 2), { arch: 'ppc64le', emulated: false })).toMatch(
      /x2 on ppc64le: 10m -> 20m/,
    );
    expect(limitsNote(spec, effectiveLimits(spec, 1), { arch: 's390x', emulated: true })).toBe('');
  });
  it('formats limits as they are read', () => {
    expect([45, 600, 150, 3600, 3900, 3000 * 3].map(formatLimit)).toEqual([
      '45s',
      '10m',
      '2m30s',
      '1h',
      '1h05m',
      '2h30m',
    ]);
  });
  it('job show prints the effective limits and where they come from', () => {
    const job = {
      id: 'j1',
      arch: 's390x',
      image: 'busybox',
      state: 'running',
      spec: { timeoutSeconds: 600, silenceTimeoutSeconds: 120 },
      labels: {},
      createdAt: '2026-01-01T00:00:00.000Z',
      attempt: 1,
      attempts: [],
      cancelRequested: false,
      warnings: [],
      logBytes: 0,
      effectiveLimits: { timeoutSeconds: 1800, silenceTimeoutSeconds: 360, multiplier: 3 },
    } as unknown as JobRecord;
    const text = describeJob(job, { url: 'http://api' } as never);
    expect(text).toMatch(/time limit: +30m00s \(10m00s x3 on s390x\)/);
    expect(text).toMatch(/silence limit: +6m00s \(2m00s x3 on s390x\)/);
    const plain = describeJob({ ...job, effectiveLimits: undefined }, { url: 'http://api' } as never);
    expect(plain).toMatch(/time limit: +10m00s\n/);
  });
});
