import { describe, expect, it } from 'vitest';
import {
  decide,
  emptyMemory,
  type ScaleInput,
  type ScaleMemory,
  type ScaleNode,
  type ScalePolicy,
} from '../../ops/scaler/index.ts';

const policy: ScalePolicy = { upAfterMs: 5_000, upCooldownMs: 10_000, downAfterMs: 60_000 };
const pool = { min: 0, max: 4, slotsPerNode: 2 };

const node = (id: string, busy: number, more: Partial<ScaleNode> = {}): ScaleNode => ({
  id,
  slots: 2,
  busy,
  state: 'active',
  drainRequested: false,
  lost: false,
  ...more,
});

const input = (more: Partial<ScaleInput>): ScaleInput => ({
  now: 1_000_000,
  pool,
  waiting: 0,
  oldestWaitingMs: undefined,
  nodes: [],
  starting: 0,
  ...more,
});

/** Runs passes every `stepMs` from `from` with the same input, returning the decisions. */
function passes(
  from: number,
  count: number,
  stepMs: number,
  make: (now: number) => ScaleInput,
  memory: ScaleMemory = emptyMemory(),
) {
  const out = [];
  let m = memory;
  for (let i = 0; i < count; i++) {
    const d = decide(make(from + i * stepMs), policy, m);
    m = d.memory;
    out.push(d);
  }
  return { decisions: out, memory: m };
}

describe('scaling decision', () => {
  it('a burst on an empty pool scales up at once, to the nodes the jobs need', () => {
    const d = decide(input({ waiting: 5, oldestWaitingMs: 10 }), policy, emptyMemory());
    expect(d.action).toEqual({ kind: 'up', add: 3 });
    expect(d.desired).toBe(3);
    expect(d.memory.lastUpAt).toBe(1_000_000);
  });

  it('never beyond max', () => {
    const d = decide(input({ waiting: 100, oldestWaitingMs: 10 }), policy, emptyMemory());
    expect(d.action).toEqual({ kind: 'up', add: 4 });
    expect(d.desired).toBe(4);
    const full = decide(
      input({ waiting: 100, oldestWaitingMs: 60_000, nodes: [1, 2, 3, 4].map((i) => node(`n${i}`, 2)) }),
      policy,
      emptyMemory(),
    );
    expect(full.action).toEqual({ kind: 'none' });
    expect(full.desired).toBe(4);
  });

  it('keeps min, with no job at all', () => {
    const d = decide(input({ pool: { ...pool, min: 2 } }), policy, emptyMemory());
    expect(d.action).toEqual({ kind: 'up', add: 2 });
    // Nodes starting count: no second request while they boot.
    const again = decide(input({ pool: { ...pool, min: 2 }, starting: 2 }), policy, d.memory);
    expect(again.action).toEqual({ kind: 'none' });
  });

  it('a disabled pool (max 0) asks for nothing, and drains what it has', () => {
    const disabled = { ...pool, max: 0 };
    expect(decide(input({ pool: disabled, waiting: 3 }), policy, emptyMemory()).action).toEqual({
      kind: 'none',
    });
    const d = decide(input({ pool: disabled, nodes: [node('a', 1), node('b', 0)] }), policy, emptyMemory());
    // Idle first, then the busy one, which finishes its job before it leaves.
    expect(d.action).toEqual({ kind: 'down', drain: ['b', 'a'] });
  });

  it('a pool with nodes grows only once the oldest waiting job has waited upAfterMs', () => {
    const nodes = [node('a', 2)];
    const young = decide(input({ nodes, waiting: 2, oldestWaitingMs: 1_000 }), policy, emptyMemory());
    expect(young.action).toEqual({ kind: 'none' });
    const old = decide(input({ nodes, waiting: 2, oldestWaitingMs: 5_000 }), policy, emptyMemory());
    expect(old.action).toEqual({ kind: 'up', add: 1 });
  });

  it('scales up at most once per up cooldown', () => {
    const first = decide(input({ waiting: 2, oldestWaitingMs: 0 }), policy, emptyMemory());
    expect(first.action).toEqual({ kind: 'up', add: 1 });
    // 5 s later: the node is up and busy, more jobs wait for long enough, but the cooldown holds.
    const busy = { nodes: [node('a', 2)], waiting: 6, oldestWaitingMs: 20_000 };
    const soon = decide(input({ ...busy, now: 1_005_000 }), policy, first.memory);
    expect(soon.action).toEqual({ kind: 'none' });
    expect(soon.reason).toMatch(/cooldown/);
    const later = decide(input({ ...busy, now: 1_010_000 }), policy, soon.memory);
    expect(later.action).toEqual({ kind: 'up', add: 3 });
  });

  it('scales down only after downAfterMs of surplus, and only idle nodes, the longest idle first', () => {
    const nodes = [node('a', 0), node('b', 1), node('c', 0)];
    // b runs one job: one node is needed, three are present.
    const { decisions, memory } = passes(1_000_000, 30, 2_000, (now) => input({ now, nodes }));
    expect(decisions.every((d) => d.action.kind === 'none')).toBe(true);
    const d = decide(input({ now: 1_060_000, nodes }), policy, memory);
    expect(d.action).toEqual({ kind: 'down', drain: ['a', 'c'] });
    expect(d.desired).toBe(1);
  });

  it('a busy node is never drained, however long the surplus lasts', () => {
    const nodes = [node('a', 1), node('b', 1)];
    // min 0 and little load, but both nodes run a job: nothing to drain.
    const { decisions } = passes(1_000_000, 100, 2_000, (now) => input({ now, nodes, pool: { ...pool } }));
    expect(decisions.some((d) => d.action.kind === 'down')).toBe(false);
  });

  it('a peak within the window holds the nodes it needed', () => {
    const two = [node('a', 2), node('b', 2)];
    const idle = [node('a', 0), node('b', 0)];
    // Busy for a while, then idle: the window still holds the peak for downAfterMs.
    let { memory } = passes(1_000_000, 40, 2_000, (now) => input({ now, nodes: two }));
    const quiet = passes(1_080_000, 29, 2_000, (now) => input({ now, nodes: idle }), memory);
    expect(quiet.decisions.every((d) => d.action.kind === 'none')).toBe(true);
    memory = quiet.memory;
    const d = decide(input({ now: 1_140_000, nodes: idle }), policy, memory);
    expect(d.action).toEqual({ kind: 'down', drain: ['a', 'b'] });
  });

  it('keeps min on the way down', () => {
    const nodes = [node('a', 0), node('b', 0), node('c', 0)];
    const p = { ...pool, min: 1 };
    const { memory } = passes(1_000_000, 31, 2_000, (now) => input({ now, nodes, pool: p }));
    const d = decide(input({ now: 1_062_000, nodes, pool: p }), policy, memory);
    expect(d.action).toEqual({ kind: 'down', drain: ['a', 'b'] });
  });

  it('a fresh scaler never shrinks a pool before it has watched it for downAfterMs', () => {
    const nodes = [node('a', 0), node('b', 0)];
    const d = decide(input({ nodes }), policy, emptyMemory());
    expect(d.action).toEqual({ kind: 'none' });
  });

  it('a draining node counts as gone, a lost one is ignored, a quarantined one is left alone', () => {
    const nodes = [
      node('leaving', 1, { state: 'draining' }),
      node('asked', 0, { drainRequested: true }),
      node('lost', 0, { lost: true }),
      node('sick', 0, { state: 'quarantined' }),
    ];
    // Two jobs waiting on a pool whose only staying node is quarantined: one more node is needed.
    const d = decide(input({ nodes, waiting: 2, oldestWaitingMs: 6_000 }), policy, emptyMemory());
    expect(d.current).toBe(1);
    expect(d.action).toEqual({ kind: 'up', add: 1 });
    const { memory } = passes(1_000_000, 31, 2_000, (now) => input({ now, nodes }));
    const idle = decide(input({ now: 1_062_000, nodes }), policy, memory);
    expect(idle.action).toEqual({ kind: 'none' });
  });
});
