import { describe, expect, it } from 'vitest';
import { MAX_ATTEMPTS } from '../../queue/index.ts';
import {
  HAND_OFF_MS,
  HAND_OFF_WINDOW_MS,
  handOffMs,
  RETRY_BACKOFF_MAX_MS,
  retryBackoffMs,
  retryDelayMs,
} from '../../workers/index.ts';

describe('retry policy', () => {
  it('backs off 2 s, 4 s, 8 s ... and never beyond the maximum', () => {
    expect([1, 2, 3].map(retryBackoffMs)).toEqual([2000, 4000, 8000]);
    expect(retryBackoffMs(50)).toBe(RETRY_BACKOFF_MAX_MS);
    // Every retry a job can get waits a bounded time in all.
    let total = 0;
    for (let n = 1; n < MAX_ATTEMPTS; n++) total += retryDelayMs(n, 0);
    expect(total).toBeLessThanOrEqual(MAX_ATTEMPTS * RETRY_BACKOFF_MAX_MS);
  });

  it('retries at once when another node is live, after the back-off when none is', () => {
    expect(retryDelayMs(1, 1)).toBe(0);
    expect(retryDelayMs(1, 0)).toBe(2000);
    expect(retryDelayMs(2, 0)).toBe(4000);
  });

  it('hands a retry off to another live node, for a bounded time only', () => {
    const at = { erroredHere: true, endedAtMs: 1_000_000, otherLiveNodes: 1 };
    expect(handOffMs({ ...at, nowMs: 1_000_000 })).toBe(HAND_OFF_MS);
    expect(handOffMs({ ...at, nowMs: 1_000_000 + HAND_OFF_WINDOW_MS - 200 })).toBe(200);
    expect(handOffMs({ ...at, nowMs: 1_000_000 + HAND_OFF_WINDOW_MS })).toBe(0);
    expect(handOffMs({ ...at, nowMs: 1_000_000, otherLiveNodes: 0 })).toBe(0);
    expect(handOffMs({ ...at, nowMs: 1_000_000, erroredHere: false })).toBe(0);
    expect(handOffMs({ ...at, nowMs: 1_000_000, endedAtMs: Number.NaN })).toBe(0);
  });
});
