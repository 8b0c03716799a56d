import { describe, expect, it } from 'vitest';
import { noteAttempt, type QuarantineWindow } from '../../workers/index.ts';

/** Plays attempts through noteAttempt; returns whether the last one quarantined the node. */
function play(attempts: [string, 'failed' | 'fine' | 'unknown'][], after = 3): boolean {
  let w: QuarantineWindow = [];
  let q = false;
  for (const [job, host] of attempts) {
    const r = noteAttempt(w, job, host, after);
    w = r.window;
    q = r.quarantine;
  }
  return q;
}

describe('noteAttempt: when a node is quarantined', () => {
  it('after three host failures of three jobs in a row', () => {
    expect(
      play([
        ['a', 'failed'],
        ['b', 'failed'],
      ]),
    ).toBe(false);
    expect(
      play([
        ['a', 'failed'],
        ['b', 'failed'],
        ['c', 'failed'],
      ]),
    ).toBe(true);
  });

  it('the retries of one job count once', () => {
    expect(
      play([
        ['a', 'failed'],
        ['a', 'failed'],
        ['a', 'failed'],
      ]),
    ).toBe(false);
  });

  it("a job's own failure or a success between them resets the run; a shutdown changes nothing", () => {
    expect(
      play([
        ['a', 'failed'],
        ['b', 'failed'],
        ['x', 'fine'],
        ['c', 'failed'],
      ]),
    ).toBe(false);
    expect(
      play([
        ['a', 'failed'],
        ['b', 'failed'],
        ['s', 'unknown'],
        ['c', 'failed'],
      ]),
    ).toBe(true);
  });

  it("three jobs' own mistakes (a misspelled image, a missing source) never quarantine", () => {
    expect(
      play([
        ['a', 'fine'],
        ['b', 'fine'],
        ['c', 'fine'],
      ]),
    ).toBe(false);
  });

  it('keeps only the last `after` attempts', () => {
    const r = noteAttempt(['a', false, 'b'], 'c', 'failed', 3);
    expect(r.window).toEqual([false, 'b', 'c']);
    expect(r.quarantine).toBe(false);
    expect(noteAttempt(['a', 'b'], 'c', 'failed', 2)).toEqual({ window: ['b', 'c'], quarantine: true });
  });
});
