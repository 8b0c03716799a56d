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
    // 7 waiting + this one, 0 free, 4 slots: 2 rounds of 60 s.
    expect(estimateWait({ ...base, waiting: 7 })).toMatchObject({
      seconds: 120,
      basis: 'queue',
      // Its note counts the jobs ahead apart from the runs that must end before it starts (itself included).
      note: '7 job(s) ahead, 0 slot(s) free: 8 run(s) of 60 s (median) to end over 4 slot(s)',
    });
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
