import { describe, expect, it } from 'vitest';
import { rewriteLine, waitingLine } from '../../src/cli/follow.ts';
import { ordinal, placeText, type ShownJob } from '../../src/cli/queue-place.ts';

const pool = {
  waiting: 7,
  healthyNodes: 2,
  totalSlots: 4,
  estimatedWaitSeconds: 20,
  estimate: { note: 'the pool' },
};
const job = (queue: ShownJob['queue'], over: Partial<ShownJob> = {}) =>
  ({ id: 'j1', arch: 'amd64', state: 'queued', ...(queue ? { queue } : {}), ...over }) as ShownJob;

describe("the CLI's words for a queued job's place (issue #13)", () => {
  it('counts in English', () => {
    expect([1, 2, 3, 4, 10, 11, 12, 13, 21, 22, 23, 101, 111, 112].map(ordinal)).toEqual([
      '1st',
      '2nd',
      '3rd',
      '4th',
      '10th',
      '11th',
      '12th',
      '13th',
      '21st',
      '22nd',
      '23rd',
      '101st',
      '111th',
      '112th',
    ]);
  });

  it('says its place and its own estimate in line, not the whole queue', () => {
    const waiting = job({
      status: 'waiting',
      position: 3,
      of: 7,
      estimatedWaitSeconds: 12.4,
      estimate: { note: '3 job(s) ahead' },
    });
    expect(waitingLine(waiting, pool)).toBe(
      'archway: job j1 is queued: 3rd of 7 in the amd64 queue, 2 amd64 nodes (4 slots), estimated wait 12s',
    );
    const unknown = job({
      status: 'waiting',
      position: 1,
      of: 1,
      estimatedWaitSeconds: null,
      estimate: { note: 'no healthy node, and no scaler running' },
    });
    expect(waitingLine(unknown, { ...pool, healthyNodes: 0, totalSlots: 0 })).toBe(
      'archway: job j1 is queued: 1st of 1 in the amd64 queue, no live amd64 node, wait unknown (no healthy node, and no scaler running)',
    );
  });

  it('says until when a retry is in back-off; held and starting need no pool', () => {
    const delayed = job({ status: 'delayed', until: '2026-12-01T17:02:03.456Z', of: 4 });
    expect(waitingLine(delayed, pool)).toBe(
      'archway: job j1 is queued: retry in back-off until 17:02:03 UTC, then in line for 2 amd64 nodes (4 slots)',
    );
    expect(
      placeText(job({ status: 'held', of: 2 }, { waitReason: 'repository o/a has 1 of 1 job running' })),
    ).toBe('held, repository o/a has 1 of 1 job running');
    expect(placeText(job({ status: 'starting', of: 0 }))).toBe('a node is starting it');
  });

  it("without a place from the API (an older API, or before its enqueue): the arch's waiting count", () => {
    expect(placeText(job(undefined))).toBeUndefined();
    expect(waitingLine(job(undefined), pool)).toBe(
      'archway: job j1 is queued: 7 waiting for 2 amd64 nodes (4 slots), estimated wait 20s',
    );
  });

  it('rewrites the line in place on a terminal, also when it wrapped onto more rows', () => {
    const long = 'x'.repeat(110);
    expect(rewriteLine('', long, 80)).toBe(`\r\x1b[K${long}`);
    // 110 columns on an 80-column terminal are two rows: up one, then erase to the end.
    expect(rewriteLine(long, 'next', 80)).toBe('\r\x1b[1A\x1b[Jnext');
    expect(rewriteLine(long, 'next', 200)).toBe('\r\x1b[Jnext');
    expect(rewriteLine('x'.repeat(80), 'next', 80)).toBe('\r\x1b[Jnext');
    expect(rewriteLine('x'.repeat(161), 'next', undefined)).toBe('\r\x1b[2A\x1b[Jnext');
  });
});
