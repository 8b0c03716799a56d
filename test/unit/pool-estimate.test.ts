import { describe, expect, it } from 'vitest';
import { estimateWait, validatePoolSettings } from '../../queue/index.ts';
import { InvalidInputError } from '../../src/core/index.ts';

const base = {
  max: 4,
  waiting: 0,
  totalSlots: 4,
  freeSlots: 0,
  medianDurationMs: 60_000,
  nodes: 2,
  scalerReactionMs: undefined,
};

describe('estimated wait', () => {
  it('is 0 when a slot is free for the job', () => {
    expect(estimateWait({ ...base, freeSlots: 1 })).toMatchObject({ seconds: 0, basis: 'free_slot' });
    expect(estimateWait({ ...base, freeSlots: 2, waiting: 2 }).basis).toBe('queue');
  });

  it('spreads the jobs ahead over the slots, at the median run time', () => {
    // 7 waiting + this one, 0 free, 4 slots (busy for a median each): 2 rounds of 60 s.
    expect(estimateWait({ ...base, waiting: 7 })).toMatchObject({
      seconds: 120,
      basis: 'queue',
      note: '7 job(s) ahead, 0 of 4 slot(s) free, runs of 60 s (median)',
    });
  });

  it('counts what the running jobs have run so far (issue #10: it said 0 s behind two long jobs)', () => {
    // Two slots, both busy for 40 s with jobs whose median is 10 s: they are long ones, taken to
    // run as long again (40 s more); the two jobs ahead then start at 40 s, this one at 50 s.
    const long = { ...base, totalSlots: 2, medianDurationMs: 10_000, runningElapsedMs: [40_000, 40_000] };
    expect(estimateWait({ ...long, waiting: 2 })).toMatchObject({
      seconds: 50,
      basis: 'queue',
      note: '2 job(s) ahead, 0 of 2 slot(s) free, runs of 10 s (median), the running jobs at 40-40 s so far',
    });
    // Before the median, a running job has the rest of it to go: 60 - 45 = 15 s, then 60 s a run.
    expect(estimateWait({ ...base, totalSlots: 1, waiting: 1, runningElapsedMs: [45_000] }).seconds).toBe(75);
    // The one free slot goes to the first job ahead; the second waits for a busy slot's rest (60 - 50).
    expect(
      estimateWait({ ...base, totalSlots: 2, freeSlots: 1, waiting: 1, runningElapsedMs: [50_000] }).seconds,
    ).toBe(10);
    // A busy slot without a record (the node's count ahead of the records) frees after a median.
    expect(estimateWait({ ...base, totalSlots: 1, waiting: 0, runningElapsedMs: [] }).seconds).toBe(60);
  });

  it('plays out at most 2,000 starts, then adds whole rounds over the slots', () => {
    // 10,000 ahead on 4 slots of 60 s: 2,500 rounds, as many as the old formula gives.
    expect(estimateWait({ ...base, waiting: 9_999 }).seconds).toBe(150_000);
  });

  it("takes the scaler's reaction time when it is sooner and the pool can grow", () => {
    const e = estimateWait({ ...base, waiting: 7, scalerReactionMs: 12_000 });
    expect(e).toMatchObject({ seconds: 12, basis: 'scale_up' });
    expect(estimateWait({ ...base, waiting: 7, nodes: 4, scalerReactionMs: 12_000 }).basis).toBe('queue');
  });

  it('with no node: the scaler if one runs, else unknown', () => {
    const empty = { ...base, totalSlots: 0, nodes: 0, medianDurationMs: undefined };
    expect(estimateWait({ ...empty, scalerReactionMs: 9_000 })).toMatchObject({
      seconds: 9,
      basis: 'scale_up',
    });
    expect(estimateWait(empty)).toMatchObject({ seconds: null, basis: 'unknown' });
    expect(estimateWait({ ...empty, max: 0 })).toMatchObject({ seconds: null, basis: 'disabled' });
  });
});

describe('pool settings', () => {
  const ok = { min: 0, max: 4, slotsPerNode: 2 };
  const field = (f: () => void) => {
    try {
      f();
    } catch (e) {
      return e instanceof InvalidInputError ? e.field : 'not InvalidInputError';
    }
    return 'no error';
  };
  it('names the field at fault', () => {
    expect(field(() => validatePoolSettings(ok))).toBe('no error');
    expect(field(() => validatePoolSettings({ ...ok, min: 5 }, { min: 5 }))).toBe('min');
    expect(field(() => validatePoolSettings({ ...ok, min: 3, max: 2 }, { max: 2 }))).toBe('max');
    expect(field(() => validatePoolSettings({ ...ok, max: 100_000 }))).toBe('max');
    expect(field(() => validatePoolSettings({ ...ok, slotsPerNode: 0 }))).toBe('slotsPerNode');
  });
});
