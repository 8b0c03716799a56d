import type { Redis } from 'ioredis';
import { ARCHES, type Arch, type Keys } from '../src/core/index.ts';
import type { JobQueue } from './job-queue.ts';
import type { NodeInfo, NodeRegistry } from './node-registry.ts';
import type { Pool, PoolStore } from './pool-store.ts';

/** Finished jobs of an arch that the median job duration is taken from (the newest ones). */
export const DURATION_SAMPLE = 100;

/** A scaler that has not reported for this long is taken as not running. */
export const SCALER_SILENT_MS = 30_000;

/** How a wait estimate was made. */
export type WaitBasis = 'free_slot' | 'queue' | 'scale_up' | 'disabled' | 'unknown';

export interface WaitEstimate {
  /** Seconds a job submitted now may wait before a node takes it; null when unknown. */
  seconds: number | null;
  basis: WaitBasis;
  /** The estimate in words, for people. */
  note: string;
}

/** What the wait estimate is made from. */
export interface WaitInputs {
  max: number;
  waiting: number;
  /** Slots and busy slots of healthy nodes (live, active). */
  totalSlots: number;
  freeSlots: number;
  /** Median run time of the arch's recent finished jobs, in ms. */
  medianDurationMs: number | undefined;
  /** Nodes that count against max (live, not draining). */
  nodes: number;
  /** The scaler's expected reaction time, in ms, when one runs. */
  scalerReactionMs: number | undefined;
  /**
   * How long the jobs on the busy slots of healthy nodes have run so far, in ms. A busy slot with
   * none here (a node's count ahead of the records) is taken to free after a whole median.
   */
  runningElapsedMs?: readonly number[] | undefined;
}

/** Jobs ahead whose starts the estimate plays out one by one; beyond, whole rounds over the slots. */
const SIMULATED_STARTS = 2000;

/**
 * When a slot frees for the job with `waiting` jobs before it: every slot's next free time (a free
 * one now; a busy one when its job's expected rest is over), then each job ahead takes the slot
 * that frees first and holds it a median run. A running job's expected rest is the median less
 * what it ran, or, once it has run past the median, as long again as it has run (it is one of the
 * long ones; the longer it ran, the longer it is likely to go on).
 */
function slotFreeMs(i: WaitInputs, median: number): number {
  const busy = Math.max(0, i.totalSlots - i.freeSlots);
  const elapsed = [...(i.runningElapsedMs ?? [])].sort((a, b) => a - b).slice(0, busy);
  const free: number[] = Array.from({ length: i.freeSlots }, () => 0);
  for (let k = 0; k < busy; k++) {
    const e = elapsed[k];
    free.push(e === undefined ? median : e < median ? median - e : e);
  }
  free.sort((a, b) => a - b);
  const played = Math.min(i.waiting, SIMULATED_STARTS);
  // A sorted array as the queue of free times: the slots are few (tens), the starts bounded.
  for (let k = 0; k < played; k++) {
    const t = (free.shift() as number) + median;
    let at = free.findIndex((x) => x > t);
    if (at < 0) at = free.length;
    free.splice(at, 0, t);
  }
  // Past them every round of as many starts as slots adds a median to each slot: the job takes the
  // slot that the starts left over reach.
  const rest = i.waiting - played;
  return (free[rest % free.length] as number) + Math.floor(rest / free.length) * median;
}

/**
 * The estimated wait of a job submitted now (docs/operations.md, "Estimated wait"), or of a
 * queued job with `waiting` = the jobs before it in line (`PoolStatusReader.estimateAt`):
 * - 0 when a healthy node has a free slot for it (free slots > waiting jobs);
 * - else, with healthy nodes and a known median: when a slot frees for it, the jobs ahead taking
 *   the slots as they free, each for a median run, and the running jobs ending as their run so far
 *   suggests (`slotFreeMs`);
 * - when a scaler runs and the pool can grow (fewer nodes than max): its expected reaction time,
 *   if that is sooner (or the only estimate);
 * - null ("unknown") otherwise: no healthy node and no scaler to start one, or no job finished yet.
 * A pool with max 0 is disabled: null.
 */
export function estimateWait(i: WaitInputs): WaitEstimate {
  if (i.max === 0) return { seconds: null, basis: 'disabled', note: 'the pool is disabled (max 0)' };
  if (i.freeSlots > i.waiting) return { seconds: 0, basis: 'free_slot', note: 'a slot is free' };
  const fromQueue =
    i.totalSlots > 0 && i.medianDurationMs !== undefined ? slotFreeMs(i, i.medianDurationMs) : undefined;
  const fromScaler = i.scalerReactionMs !== undefined && i.nodes < i.max ? i.scalerReactionMs : undefined;
  if (fromScaler !== undefined && (fromQueue === undefined || fromScaler < fromQueue)) {
    return {
      seconds: round(fromScaler),
      basis: 'scale_up',
      note: 'the scaler starts a node (its expected reaction time)',
    };
  }
  if (fromQueue !== undefined) {
    return {
      seconds: round(fromQueue),
      basis: 'queue',
      note: `${i.waiting} job(s) ahead, ${i.freeSlots} of ${i.totalSlots} slot(s) free, runs of ${round(i.medianDurationMs ?? 0)} s (median)${i.runningElapsedMs?.length ? `, the running jobs at ${round(Math.min(...i.runningElapsedMs))}-${round(Math.max(...i.runningElapsedMs))} s so far` : ''}`,
    };
  }
  return {
    seconds: null,
    basis: 'unknown',
    note:
      i.totalSlots === 0
        ? i.nodes >= i.max
          ? 'no healthy node, and the pool is at its max'
          : 'no healthy node, and no scaler running'
        : 'no recent finished job to take a duration from',
  };
}

const round = (ms: number) => Math.round(ms / 100) / 10;

/** One arch's pool as it stands: settings, load, nodes, and the wait a new job may expect. */
export interface PoolStatus {
  pool: Pool;
  /** Jobs waiting for a slot (queue depth: waiting, prioritized and delayed for a retry), less the held ones. */
  waiting: number;
  /** Jobs held by a concurrency cap (their repository's or a label's): no free slot would take them. */
  held: number;
  /** Jobs running: busy slots of live nodes (draining ones too). */
  running: number;
  /** Every registered node of the arch, lost ones included. */
  nodes: NodeInfo[];
  /** Live nodes that take jobs. */
  healthyNodes: number;
  /** Slots of the healthy nodes, and those of them not busy. */
  totalSlots: number;
  freeSlots: number;
  /** Age of the oldest waiting job, in ms (since it was submitted). */
  oldestWaitingMs?: number;
  medianDurationMs?: number;
  estimate: WaitEstimate;
}

export interface PoolStatusReader {
  read(arch: Arch): Promise<PoolStatus>;
  /** Every arch, in ARCHES order. */
  readAll(): Promise<PoolStatus[]>;
  /**
   * The estimated wait of the job at `position` (1-based) in its arch's line (QueuePlace): the
   * pool's estimate, with the jobs before it in place of the whole queue. Reads no queue.
   */
  estimateAt(arch: Arch, position: number): Promise<WaitEstimate>;
}

export interface PoolStatusOptions {
  redis: Redis;
  keys: Keys;
  queue: JobQueue;
  nodes: NodeRegistry;
  pools: PoolStore;
  /** Clock, for tests. Default Date.now. */
  now?: () => number;
  /**
   * How long an arch's median run time is reused, in ms (default 5000). It is read from the last
   * 100 finished jobs' records, and every poll of a queued job's place (each `submit --follow`,
   * each job page) and every pool read asked for it again: 100 records per poll.
   */
  medianCacheMs?: number;
}

/** Reads pools with their load, for `GET /v1/pools` and the scaler. */
export function createPoolStatus(o: PoolStatusOptions): PoolStatusReader {
  const now = o.now ?? Date.now;
  const medianCacheMs = o.medianCacheMs ?? 5000;
  /** Per arch: the median (or the read of it in flight) and when that read started. */
  const medians = new Map<Arch, { at: number; value: Promise<number | undefined> }>();

  /** createdMs of the oldest queued job of the arch that no cap holds (the state set and the arch set share scores). */
  async function oldestWaiting(arch: Arch, held: ReadonlySet<string>): Promise<number | undefined> {
    const raw = (await o.redis.call(
      'ZINTER',
      2,
      o.keys.jobsByState('queued'),
      o.keys.jobsByArch(arch),
      'AGGREGATE',
      'MIN',
      'WITHSCORES',
    )) as string[];
    for (let i = 0; i + 1 < raw.length; i += 2) if (!held.has(raw[i] as string)) return Number(raw[i + 1]);
    return undefined;
  }

  /** How long each running job of the arch on one of `nodeIds` has run, in ms. */
  async function runningElapsed(arch: Arch, nodeIds: ReadonlySet<string>, t: number): Promise<number[]> {
    if (nodeIds.size === 0) return [];
    const ids = (await o.redis.call(
      'ZINTER',
      2,
      o.keys.jobsByState('running'),
      o.keys.jobsByArch(arch),
    )) as string[];
    if (ids.length === 0) return [];
    const p = o.redis.pipeline();
    for (const id of ids) p.hmget(o.keys.job(id), 'startedAt', 'node');
    const out: number[] = [];
    for (const [err, v] of (await p.exec()) ?? []) {
      const [started, node] = (err ? [] : v) as (string | null)[];
      const ms = started ? t - Date.parse(started) : Number.NaN;
      if (node && nodeIds.has(node) && Number.isFinite(ms)) out.push(Math.max(0, ms));
    }
    return out;
  }

  /** The arch's median run time, read at most once per `medianCacheMs` (concurrent callers share the read). */
  function medianDuration(arch: Arch): Promise<number | undefined> {
    const t = now();
    const cached = medians.get(arch);
    if (cached && t - cached.at < medianCacheMs) return cached.value;
    const value = readMedianDuration(arch);
    medians.set(arch, { at: t, value });
    // A failed read is not kept: the next caller tries again.
    value.catch(() => {
      if (medians.get(arch)?.value === value) medians.delete(arch);
    });
    return value;
  }

  async function readMedianDuration(arch: Arch): Promise<number | undefined> {
    const ids = await o.redis.zrevrange(o.keys.jobsByArch(arch), 0, DURATION_SAMPLE - 1);
    if (ids.length === 0) return undefined;
    const p = o.redis.pipeline();
    for (const id of ids) p.hmget(o.keys.job(id), 'state', 'startedAt', 'finishedAt');
    const durations: number[] = [];
    for (const [err, v] of (await p.exec()) ?? []) {
      const [state, started, finished] = (err ? [] : v) as (string | null)[];
      // Jobs that ran to their end; a canceled or errored one says little about run time.
      if ((state !== 'passed' && state !== 'failed') || !started || !finished) continue;
      const d = Date.parse(finished) - Date.parse(started);
      if (Number.isFinite(d) && d >= 0) durations.push(d);
    }
    durations.sort((a, b) => a - b);
    if (durations.length === 0) return undefined;
    const mid = Math.floor(durations.length / 2);
    return durations.length % 2 ? durations[mid] : ((durations[mid - 1] ?? 0) + (durations[mid] ?? 0)) / 2;
  }

  /** The arch's nodes and what the estimate takes from them and from the pool (all but the queue). */
  function capacity(pool: Pool, all: NodeInfo[], t: number) {
    const nodes = all.filter((n) => n.arch === pool.arch);
    const live = nodes.filter((n) => !n.lost);
    const healthy = live.filter((n) => n.state === 'active' && !n.drainRequested);
    const scalerAlive = pool.scaler !== undefined && t - pool.scaler.seenAt < SCALER_SILENT_MS;
    return {
      nodes,
      live,
      healthy,
      healthyIds: new Set(healthy.map((n) => n.id)),
      inputs: {
        max: pool.max,
        totalSlots: healthy.reduce((s, n) => s + n.slots, 0),
        freeSlots: healthy.reduce((s, n) => s + Math.max(0, n.slots - n.busy), 0),
        nodes: live.filter((n) => n.state !== 'draining' && !n.drainRequested).length,
        scalerReactionMs: scalerAlive ? pool.scaler?.reactionMs : undefined,
      },
    };
  }

  async function build(pool: Pool, all: NodeInfo[]): Promise<PoolStatus> {
    const arch = pool.arch;
    const t = now();
    const { nodes, live, healthy, healthyIds, inputs } = capacity(pool, all, t);
    const heldIds = new Set(await o.queue.limits.held(arch));
    const [depth, oldest, median, elapsed] = await Promise.all([
      o.queue.depth(arch),
      oldestWaiting(arch, heldIds),
      medianDuration(arch),
      runningElapsed(arch, healthyIds, t),
    ]);
    // A held job waits for its group, not for a slot: counted apart, so the estimate and the
    // scaler do not grow the pool for jobs that a bigger pool would not start.
    const held = Math.min(depth, heldIds.size);
    const waiting = depth - held;
    return {
      pool,
      waiting,
      held,
      running: live.reduce((s, n) => s + n.busy, 0),
      nodes,
      healthyNodes: healthy.length,
      totalSlots: inputs.totalSlots,
      freeSlots: inputs.freeSlots,
      ...(oldest !== undefined && waiting > 0 ? { oldestWaitingMs: Math.max(0, t - oldest) } : {}),
      ...(median !== undefined ? { medianDurationMs: median } : {}),
      estimate: estimateWait({ ...inputs, waiting, medianDurationMs: median, runningElapsedMs: elapsed }),
    };
  }

  return {
    async read(arch) {
      const [pool, all] = await Promise.all([o.pools.get(arch), o.nodes.list()]);
      return build(pool, all);
    },
    async readAll() {
      const [pools, all] = await Promise.all([o.pools.list(), o.nodes.list()]);
      return Promise.all(ARCHES.map((_, i) => build(pools[i] as Pool, all)));
    },
    async estimateAt(arch, position) {
      const t = now();
      const [pool, all, median] = await Promise.all([
        o.pools.get(arch),
        o.nodes.list(),
        medianDuration(arch),
      ]);
      // The jobs before it in line stand where the whole queue stands for a job submitted now.
      const { inputs, healthyIds } = capacity(pool, all, t);
      const elapsed = await runningElapsed(arch, healthyIds, t);
      return estimateWait({
        ...inputs,
        waiting: Math.max(0, position - 1),
        medianDurationMs: median,
        runningElapsedMs: elapsed,
      });
    },
  };
}
