import type { NodeState, PoolSettings } from '../../queue/index.ts';

/** When the scaler acts (ScalerConfig's ARCHWAY_SCALER_* variables), in ms. */
export interface ScalePolicy {
  /** A pool that has nodes grows only once its oldest waiting job has waited this long. */
  upAfterMs: number;
  /** Least time between two scale-ups of one pool. */
  upCooldownMs: number;
  /** A pool shrinks only after it has needed fewer nodes than it has for this long. */
  downAfterMs: number;
}

/** What the decision needs to know of a node. */
export interface ScaleNode {
  id: string;
  slots: number;
  busy: number;
  state: NodeState;
  drainRequested: boolean;
  lost: boolean;
}

export interface ScaleInput {
  now: number;
  pool: PoolSettings;
  /** Jobs waiting (queue depth). */
  waiting: number;
  /** Age of the oldest waiting job, in ms. */
  oldestWaitingMs: number | undefined;
  /** Every registered node of the arch. */
  nodes: readonly ScaleNode[];
  /** Nodes asked of the provider that have not registered yet. */
  starting: number;
}

/** What the scaler remembers of a pool between two passes (the decision returns the next one). */
export interface ScaleMemory {
  /** When the scaler first looked at the pool: it never shrinks a pool it has watched for less than downAfterMs. */
  since?: number;
  lastUpAt?: number;
  /** The nodes needed at each pass of the last downAfterMs, oldest first: [time, nodes]. */
  history: [number, number][];
  /** Since when each serving node has been seen idle (no busy slot), by node id. */
  idleSince: Record<string, number>;
}

export const emptyMemory = (): ScaleMemory => ({ history: [], idleSince: {} });

export type ScaleAction =
  | { kind: 'none' }
  /** Ask the provider for `add` more nodes. */
  | { kind: 'up'; add: number }
  /** Drain these nodes (they leave by themselves once their jobs are done). */
  | { kind: 'down'; drain: string[] };

export interface ScaleDecision {
  /** The nodes the pool is steered to (written to the pool as `desired`). */
  desired: number;
  /** Nodes needed by the load now, within min..max (before the scale-down delay). */
  needed: number;
  /** Nodes that count: live ones not leaving, and those starting. */
  current: number;
  action: ScaleAction;
  /** Why, in words (logged). */
  reason: string;
  memory: ScaleMemory;
}

const clamp = (n: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, n));

/**
 * The scaling decision for one pool: pure, so it is tested apart from Redis and the providers.
 *
 * - Needed nodes: enough slots for every running and waiting job, ceil((busy + waiting) /
 *   slotsPerNode), plus the quarantined nodes (they hold a machine but take no job), within
 *   min..max.
 * - Up, fast: below min at once; for load only while jobs wait, at once when the pool has no node
 *   (serving or starting), else once the oldest waiting job has waited upAfterMs; then at most
 *   once per upCooldownMs. Starting nodes count, so a slow boot does not ask twice.
 * - Down, slowly: only once the pool has needed fewer nodes than it has for all of the last
 *   downAfterMs (the most needed over that window is the target), and only by draining idle nodes
 *   (no busy slot), the longest idle first. A busy node is never drained, a quarantined one is left
 *   to the operator, and a draining node already counts as gone.
 * - Above max (an operator lowered it): drained at once, idle nodes first, then busy ones, which
 *   finish their jobs before leaving (never killed), then quarantined ones.
 */
export function decide(input: ScaleInput, policy: ScalePolicy, memory: ScaleMemory): ScaleDecision {
  const { now, pool } = input;
  const live = input.nodes.filter((n) => !n.lost);
  const staying = live.filter((n) => n.state !== 'draining' && !n.drainRequested);
  const serving = staying.filter((n) => n.state === 'active');
  const quarantined = staying.filter((n) => n.state === 'quarantined');
  const current = staying.length + input.starting;
  const busy = serving.reduce((s, n) => s + n.busy, 0);

  const idleSince: Record<string, number> = {};
  for (const n of serving) if (n.busy === 0) idleSince[n.id] = memory.idleSince[n.id] ?? now;
  const since = memory.since ?? now;
  const needed = clamp(
    Math.ceil((busy + input.waiting) / Math.max(1, pool.slotsPerNode)) + quarantined.length,
    pool.min,
    pool.max,
  );
  const history: [number, number][] = [
    ...memory.history.filter(([t]) => t > now - policy.downAfterMs),
    [now, needed],
  ];
  const next: ScaleMemory = {
    since,
    history,
    idleSince,
    ...(memory.lastUpAt === undefined ? {} : { lastUpAt: memory.lastUpAt }),
  };
  const result = (desired: number, action: ScaleAction, reason: string): ScaleDecision => ({
    desired,
    needed,
    current,
    action,
    reason,
    memory: action.kind === 'up' ? { ...next, lastUpAt: now } : next,
  });
  const longestIdle = (a: ScaleNode, b: ScaleNode) =>
    (idleSince[a.id] ?? now) - (idleSince[b.id] ?? now) || a.id.localeCompare(b.id);

  if (current > pool.max) {
    const order = [
      ...serving.filter((n) => n.busy === 0).sort(longestIdle),
      ...serving.filter((n) => n.busy > 0).sort((a, b) => a.busy - b.busy || a.id.localeCompare(b.id)),
      ...quarantined,
    ];
    const drain = order.slice(0, current - pool.max).map((n) => n.id);
    return drain.length > 0
      ? result(pool.max, { kind: 'down', drain }, `above max ${pool.max}: draining ${drain.length}`)
      : result(pool.max, { kind: 'none' }, `above max ${pool.max}: waiting for starting nodes to register`);
  }

  if (needed > current) {
    if (current < pool.min)
      return result(needed, { kind: 'up', add: needed - current }, `below min ${pool.min}`);
    if (input.waiting === 0) return result(current, { kind: 'none' }, 'no job waits');
    const empty = serving.length + input.starting === 0;
    const age = input.oldestWaitingMs ?? 0;
    if (!empty && age < policy.upAfterMs)
      return result(
        needed,
        { kind: 'none' },
        `${input.waiting} waiting, the oldest for ${age} ms: not yet ${policy.upAfterMs} ms`,
      );
    const last = memory.lastUpAt;
    if (last !== undefined && now - last < policy.upCooldownMs)
      return result(needed, { kind: 'none' }, `up cooldown: ${policy.upCooldownMs - (now - last)} ms left`);
    return result(
      needed,
      { kind: 'up', add: needed - current },
      `${input.waiting} waiting, ${busy} running: ${needed} node(s) needed, ${current} present`,
    );
  }

  if (needed < current) {
    const watched = now - since >= policy.downAfterMs;
    const target = clamp(Math.max(...history.map(([, n]) => n)), pool.min, pool.max);
    if (!watched || target >= current)
      return result(current, { kind: 'none' }, `surplus for less than ${policy.downAfterMs} ms`);
    const drain = serving
      .filter((n) => n.busy === 0)
      .sort(longestIdle)
      .slice(0, current - target)
      .map((n) => n.id);
    if (drain.length === 0) return result(current, { kind: 'none' }, 'surplus, but no idle node to drain');
    return result(
      current - drain.length,
      { kind: 'down', drain },
      `${target} node(s) needed over the last ${policy.downAfterMs} ms, ${current} present: draining ${drain.length} idle`,
    );
  }
  return result(current, { kind: 'none' }, 'steady');
}
