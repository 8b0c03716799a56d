import type { Redis } from 'ioredis';
import { createLease, type NodeRegistry, type PoolStatusReader, type PoolStore } from '../../queue/index.ts';
import { type Arch, type Keys, type Logger, toError } from '../../src/core/index.ts';
import { decide, emptyMemory, type ScaleMemory, type ScalePolicy } from './decide.ts';
import type { ScalerProvider } from './provider.ts';

export interface ScalerOptions {
  redis: Redis;
  keys: Keys;
  pools: PoolStore;
  status: PoolStatusReader;
  nodes: NodeRegistry;
  provider: ScalerProvider;
  /** Pools this scaler looks after. */
  arches: readonly Arch[];
  /** Time between two passes, in ms. */
  intervalMs: number;
  policy: ScalePolicy;
  /** Expected ms from asking the provider to a new node registered, until the scaler has measured it. */
  bootEstimateMs: number;
  /** This scaler's id (for the lock that lets only one scaler act). */
  instanceId: string;
  logger: Logger;
}

export interface Scaler {
  /** Runs a first pass, then one every intervalMs. */
  start(): Promise<void>;
  /** One pass over every pool (what the timer runs). */
  tick(): Promise<void>;
  /** Whether this scaler holds the lock and acts. */
  readonly leader: boolean;
  /**
   * Idempotent. Order: the timer, the pass under way, the provider actions under way, the
   * provider (whose close says what happens to its nodes), then the lock. Every step runs.
   */
  close(): Promise<void>;
}

/** Boot times the reaction estimate is the median of. */
const BOOT_SAMPLES = 5;

/**
 * The scaler's loop: each pass, for each pool, reads its status, decides (decide.ts), writes
 * `desired` and its report to the pool, drains the nodes chosen to go, asks the provider for new
 * ones, and tells it about nodes that have left. Only the scaler holding the lock acts, so a
 * second one can stand by. A provider action runs in the background; the pool is not acted on
 * again until it has ended.
 */
export function createScaler(o: ScalerOptions): Scaler {
  const log = o.logger.child({ component: 'scaler' });
  const lock = createLease(o.redis, o.keys.scalerLock, Math.max(10_000, 3 * o.intervalMs), {
    owner: o.instanceId,
  });

  const memory = new Map<Arch, ScaleMemory>();
  const inflight = new Map<Arch, Promise<void>>();
  /** Nodes this scaler drained, until they have left: then the provider is told. */
  const leaving = new Map<string, Arch>();
  /** A scale-up waiting for its first node: when, and the nodes known then. */
  const booting = new Map<Arch, { at: number; known: Set<string> }>();
  const bootSamples: number[] = [];
  const last = new Map<Arch, string>();
  let leader = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let closing: Promise<void> | undefined;

  const reactionMs = () => {
    const s = [...bootSamples].sort((a, b) => a - b);
    const boot = s.length ? (s[Math.floor(s.length / 2)] as number) : o.bootEstimateMs;
    return o.intervalMs + boot;
  };

  async function pass(arch: Arch): Promise<void> {
    const now = Date.now();
    const st = await o.status.read(arch);
    const live = st.nodes.filter((n) => !n.lost);
    const registered = new Set(live.map((n) => n.id));
    const present = live.filter((n) => n.state !== 'draining' && !n.drainRequested).length;

    const b = booting.get(arch);
    if (b && [...registered].some((id) => !b.known.has(id))) {
      bootSamples.push(now - b.at);
      if (bootSamples.length > BOOT_SAMPLES) bootSamples.shift();
      booting.delete(arch);
    }
    for (const [id, a] of leaving) {
      if (a !== arch || registered.has(id)) continue;
      leaving.delete(id);
      await o.provider
        .down({ arch, node: id, total: present })
        .catch((e: unknown) =>
          log.error({ arch, node: id, err: toError(e).message }, 'provider down failed'),
        );
    }
    if (inflight.has(arch)) return;

    const starting = o.provider.reconcile(arch, { registered, present, now });
    const d = decide(
      {
        now,
        pool: st.pool,
        waiting: st.waiting,
        oldestWaitingMs: st.oldestWaitingMs,
        nodes: st.nodes,
        starting,
      },
      o.policy,
      memory.get(arch) ?? emptyMemory(),
    );
    memory.set(arch, d.memory);
    await o.pools.setDesired(arch, d.desired, {
      seenAt: now,
      reactionMs: reactionMs(),
      provider: o.provider.name,
    });
    const summary = `${d.action.kind}:${d.desired}:${d.reason.replace(/\d+ ms/g, '')}`;
    if (last.get(arch) !== summary) {
      last.set(arch, summary);
      log[d.action.kind === 'none' ? 'debug' : 'info'](
        {
          arch,
          desired: d.desired,
          current: d.current,
          needed: d.needed,
          waiting: st.waiting,
          action: d.action,
        },
        d.reason,
      );
    }

    switch (d.action.kind) {
      case 'none':
        return;
      case 'up': {
        booting.set(arch, { at: now, known: registered });
        const p = o.provider
          .up({ arch, add: d.action.add, total: d.desired, slots: st.pool.slotsPerNode })
          .catch((e: unknown) => log.error({ arch, err: toError(e).message }, 'provider up failed'))
          .finally(() => inflight.delete(arch));
        inflight.set(arch, p);
        return;
      }
      case 'down':
        for (const id of d.action.drain) {
          // The node leaves by itself once its jobs are done; the provider is told when it has.
          if (await o.nodes.requestDrain(id, true)) leaving.set(id, arch);
        }
        return;
      default: {
        const never: never = d.action;
        throw new Error(`unhandled action ${JSON.stringify(never)}`);
      }
    }
  }

  async function tick(): Promise<void> {
    const held = await lock.take();
    if (held !== leader) {
      leader = held;
      if (held) log.info('this scaler acts (it holds the lock)');
      else log.warn('another scaler holds the lock: standing by');
      // A new leader starts its windows afresh: it never shrinks a pool on what another saw.
      memory.clear();
    }
    if (!held) return;
    for (const arch of o.arches) {
      try {
        await pass(arch);
      } catch (e) {
        log.warn({ arch, err: toError(e).message }, 'scaler pass failed');
      }
    }
  }

  const loop = () => {
    running = tick()
      .catch((e: unknown) => log.warn({ err: toError(e).message }, 'scaler pass failed'))
      .finally(() => {
        running = undefined;
        if (!closing) timer = setTimeout(loop, o.intervalMs);
      });
  };

  return {
    get leader() {
      return leader;
    },
    tick,
    async start() {
      loop();
      await running;
    },
    close() {
      closing ??= (async () => {
        const steps: [string, () => Promise<unknown>][] = [
          ['timer', async () => clearTimeout(timer)],
          ['pass', async () => running],
          ['provider actions', () => Promise.all(inflight.values())],
          ['provider', () => o.provider.close()],
          ['lock', () => lock.release()],
        ];
        for (const [what, step] of steps) {
          try {
            await step();
          } catch (e) {
            log.warn({ err: toError(e).message }, `closing the ${what} failed`);
          }
        }
      })();
      return closing;
    },
  };
}
