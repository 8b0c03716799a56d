import type { Redis } from 'ioredis';
import { z } from 'zod';
import { type Arch, Arch as ArchSchema, type Keys } from '../src/core/index.ts';

/** A node silent for this long is lost. */
export const LOST_AFTER_MS = 10_000;
export const HEARTBEAT_MS = 2_000;

export type NodeState = 'active' | 'draining' | 'quarantined';

/** One image version a node holds (reported by its sync agent). */
export const HeldImage = z.object({
  name: z.string(),
  arch: ArchSchema,
  digest: z.string(),
  /** The version new jobs on the node get. */
  current: z.boolean(),
});
export type HeldImage = z.infer<typeof HeldImage>;

export interface NodeInfo {
  id: string;
  arch: Arch;
  hostArch: string;
  emulated: boolean;
  slots: number;
  busy: number;
  /** active: takes jobs; draining: asked to drain or finishing its jobs, then leaves; quarantined: stopped taking jobs after repeated host errors. */
  state: NodeState;
  /** Why a quarantined node stopped taking jobs. */
  quarantineReason?: string;
  /** An operator asked it to drain (it leaves once its jobs are done, unless undrained first). */
  drainRequested: boolean;
  version: string;
  startedAt: string;
  /** Epoch ms of the last heartbeat, by Redis's clock. */
  lastSeen: number;
  /** Derived: no heartbeat for LOST_AFTER_MS. */
  lost: boolean;
  /** Derived: ms since the last heartbeat, by Redis's clock. */
  silentMs: number;
  /** Image versions the node holds, as its sync agent last reported (empty without one). */
  images: HeldImage[];
}

export interface NodeRegistry {
  /** Writes the node's record and its first heartbeat. */
  register(
    info: Omit<NodeInfo, 'lastSeen' | 'lost' | 'silentMs' | 'drainRequested' | 'quarantineReason' | 'images'>,
  ): Promise<void>;
  /** Records the image versions the node holds, on its record only while it is registered. */
  setImages(id: string, images: readonly HeldImage[]): Promise<void>;
  /** Updates what changes (busy slots, state) and the heartbeat, by Redis's clock. */
  heartbeat(
    id: string,
    fields: { busy: number; state: NodeState; quarantineReason?: string },
  ): Promise<{ drainRequested: boolean }>;
  /** Asks a node to drain (true) or to take jobs again (false: undrain, also lifts a quarantine). False when no such node. */
  requestDrain(id: string, drain: boolean): Promise<boolean>;
  get(id: string): Promise<NodeInfo | undefined>;
  /** Whether an operator has asked the node to drain (the durable flag; one read, for each job a node takes). */
  isDrainRequested(id: string): Promise<boolean>;
  deregister(id: string): Promise<void>;
  /** Deletes the records of nodes silent for longer than `silentMs` (a lost node's leftovers); returns their ids. */
  forgetLost(silentMs: number): Promise<string[]>;
  list(): Promise<NodeInfo[]>;
  /** Nodes of `arch` that heartbeat within LOST_AFTER_MS and take jobs. */
  live(arch: Arch): Promise<NodeInfo[]>;
}

/** Redis's own clock, so nodes with skewed clocks agree on who is lost. */
async function serverNow(redis: Redis): Promise<number> {
  const [s, us] = await redis.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

const SET_IF_EXISTS = `if redis.call('exists', KEYS[1]) == 1 then return redis.call('hset', KEYS[1], ARGV[1], ARGV[2]) end return 0`;

function parseHeld(text: string | undefined): HeldImage[] {
  if (!text) return [];
  try {
    const parsed = z.array(HeldImage).safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : [];
  } catch {
    return [];
  }
}

export function createNodeRegistry(redis: Redis, keys: Keys): NodeRegistry {
  async function list(): Promise<NodeInfo[]> {
    const now = await serverNow(redis);
    const ids = await redis.zrange(keys.nodes, 0, -1);
    const out: NodeInfo[] = [];
    for (const id of ids) {
      const h = await redis.hgetall(keys.node(id));
      if (!h.id) continue;
      const lastSeen = Number(h.lastSeen ?? 0);
      out.push({
        id,
        arch: h.arch as Arch,
        hostArch: h.hostArch ?? '',
        emulated: h.emulated === '1',
        slots: Number(h.slots ?? 0),
        busy: Number(h.busy ?? 0),
        // Draining as soon as it is asked to, not only once the node's heartbeat says so: from then
        // on it takes no new job (the node checks the flag at each job it takes).
        state:
          h.drainRequested === '1'
            ? 'draining'
            : h.state === 'draining' || h.state === 'quarantined'
              ? h.state
              : 'active',
        ...(h.quarantineReason ? { quarantineReason: h.quarantineReason } : {}),
        drainRequested: h.drainRequested === '1',
        version: h.version ?? '',
        startedAt: h.startedAt ?? '',
        lastSeen,
        lost: now - lastSeen > LOST_AFTER_MS,
        silentMs: Math.max(0, now - lastSeen),
        images: parseHeld(h.images),
      });
    }
    return out;
  }
  return {
    async register(info) {
      const now = await serverNow(redis);
      await redis
        .multi()
        .hset(keys.node(info.id), {
          ...info,
          emulated: info.emulated ? '1' : '0',
          lastSeen: String(now),
          drainRequested: '0',
        })
        .zadd(keys.nodes, now, info.id)
        .exec();
    },
    async heartbeat(id, fields) {
      const now = await serverNow(redis);
      const res = await redis
        .multi()
        .hset(keys.node(id), {
          busy: String(fields.busy),
          state: fields.state,
          lastSeen: String(now),
          quarantineReason: fields.quarantineReason ?? '',
        })
        .zadd(keys.nodes, now, id)
        .hget(keys.node(id), 'drainRequested')
        .exec();
      return { drainRequested: res?.[2]?.[1] === '1' };
    },
    async setImages(id, images) {
      // Only onto a live record: a report racing the node's deregistration must not recreate it.
      await redis.eval(SET_IF_EXISTS, 1, keys.node(id), 'images', JSON.stringify(images));
    },
    async requestDrain(id, drain) {
      if (!(await redis.exists(keys.node(id)))) return false;
      await redis.hset(keys.node(id), 'drainRequested', drain ? '1' : '0');
      await redis.publish(keys.nodeControlChannel, id);
      return true;
    },
    async get(id) {
      return (await list()).find((n) => n.id === id);
    },
    async isDrainRequested(id) {
      return (await redis.hget(keys.node(id), 'drainRequested')) === '1';
    },
    async deregister(id) {
      await redis.multi().del(keys.node(id)).zrem(keys.nodes, id).exec();
    },
    async forgetLost(silentMs) {
      const gone = (await list()).filter((n) => n.lost && n.silentMs > silentMs).map((n) => n.id);
      for (const id of gone) await redis.multi().del(keys.node(id)).zrem(keys.nodes, id).exec();
      return gone;
    },
    list,
    async live(arch) {
      return (await list()).filter((n) => n.arch === arch && !n.lost && n.state === 'active');
    },
  };
}
