/**
 * Where and when the retry of an errored attempt runs (docs/architecture.md, "Attempts"): on
 * another live node of the arch at once when there is one, else on the same node after a
 * back-off that doubles with the attempt. Pure, so it is unit-tested without Redis.
 */

/** Back-off after the first errored attempt when no other node can take the retry; doubles per attempt. */
export const RETRY_BACKOFF_BASE_MS = 2_000;
/** The longest back-off: however many attempts are allowed, a retry never waits longer. */
export const RETRY_BACKOFF_MAX_MS = 60_000;
/** How long a node that leaves a retry to another node puts it back for, each time it takes it. */
export const HAND_OFF_MS = 1_000;
/**
 * How long after an attempt errored its node leaves the retry to the other live nodes; past it
 * (they stayed busy) the node runs the retry itself. A node that hands off re-blocks after the
 * idle ones, which Redis serves first, so an idle other node takes the job at the next hop.
 */
export const HAND_OFF_WINDOW_MS = 30_000;

/** The back-off after errored attempt `attempt` (1-based): 2 s, 4 s, 8 s ..., at most RETRY_BACKOFF_MAX_MS. */
export function retryBackoffMs(attempt: number): number {
  return Math.min(RETRY_BACKOFF_MAX_MS, RETRY_BACKOFF_BASE_MS * 2 ** Math.max(0, attempt - 1));
}

/** How long the retry of errored attempt `attempt` waits before any node may take it. */
export function retryDelayMs(attempt: number, otherLiveNodes: number): number {
  return otherLiveNodes > 0 ? 0 : retryBackoffMs(attempt);
}

export interface HandOffInputs {
  /** The job's last attempt errored on the node that has just taken it. */
  erroredHere: boolean;
  /** When that attempt ended (epoch ms; NaN when unknown). */
  endedAtMs: number;
  nowMs: number;
  /** Live nodes of the arch that take jobs, other than this one. */
  otherLiveNodes: number;
}

/**
 * When a node takes a job whose last attempt errored on it: 0 to run it, else how many ms to put
 * it back for so that another node takes it. Bounded: once HAND_OFF_WINDOW_MS has passed since the
 * attempt ended (the other nodes stayed busy), or when no other node is live, the node runs it
 * itself, so a job never bounces for ever.
 */
export function handOffMs(i: HandOffInputs): number {
  if (!i.erroredHere || i.otherLiveNodes === 0 || !Number.isFinite(i.endedAtMs)) return 0;
  const until = i.endedAtMs + HAND_OFF_WINDOW_MS;
  return i.nowMs >= until ? 0 : Math.min(HAND_OFF_MS, until - i.nowMs);
}
