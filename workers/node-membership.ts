import type { EventEmitter } from 'node:events';
import { HEARTBEAT_MS, type HeldImage, type NodeRegistry, type NodeState } from '../queue/index.ts';
import { type Arch, type Logger, toError } from '../src/core/index.ts';
import type { HostVerdict } from './run-job.ts';
import type { WorkerEvents } from './worker-events.ts';

/** Attempts after which a node whose every one the host failed is quarantined (`quarantineAfter`). */
export const QUARANTINE_AFTER = 3;

/** The recent attempts that count toward quarantine, newest last: the job's id when the host failed it, else false. */
export type QuarantineWindow = readonly (string | false)[];

/**
 * Adds one attempt to the window and says whether the node must be quarantined: when the host
 * failed each of the last `after` attempts. Only the host's failures count (`failed`); a job's own
 * failure or success clears the run (`fine`); a shutdown or an early cancel changes nothing
 * (`unknown`). The retries of one job count once: on a pool of one node three attempts of the
 * same job say as much about the job as about the host. Pure: unit-tested without Redis.
 */
export function noteAttempt(
  window: QuarantineWindow,
  jobId: string,
  host: HostVerdict,
  after: number,
): { window: QuarantineWindow; quarantine: boolean } {
  if (host === 'unknown' || (host === 'failed' && window.includes(jobId)))
    return { window, quarantine: false };
  const next = [...window, host === 'failed' ? jobId : (false as const)].slice(-after);
  return { window: next, quarantine: next.length === after && next.every(Boolean) };
}

export interface NodeMembershipOptions {
  nodeId: string;
  arch: Arch;
  slots: number;
  version: string;
  emulated: boolean;
  nodes: NodeRegistry;
  logger: Logger;
  events: EventEmitter<WorkerEvents>;
  /** A node whose last this-many attempts all errored for host reasons stops taking jobs. Default 3. */
  quarantineAfter?: number | undefined;
  /** Slots in use now. */
  busy: () => number;
  /** Stop and restart taking jobs (the consumer's pause and resume). */
  pause: () => void;
  resume: () => void;
  /** Called when an operator's drain request finds the node idle: the node leaves. */
  leave: () => void;
  /**
   * The images the node holds, reported with each heartbeat when they change, so that the API can
   * refuse a job for an image no node has. Set when no image sync agent reports them. Default: none.
   */
  heldImages?: (() => Promise<HeldImage[]>) | undefined;
}

export interface NodeMembership {
  readonly state: NodeState;
  /** Writes the node's record and starts the heartbeat (every HEARTBEAT_MS). */
  start(): Promise<void>;
  /** Sends a heartbeat now and applies the drain request it answers with. Never throws. */
  beat(): Promise<void>;
  /** Whether the node must not start a job it has just taken: it drains, is asked to, or is quarantined. */
  declines(): Promise<boolean>;
  /** Counts an attempt toward quarantine (noteAttempt), and quarantines the node when it must. */
  note(jobId: string, host: HostVerdict, why?: string): void;
  /** An operator's drain or undrain request came on the control channel. */
  controlMessage(): Promise<void>;
  /** A slot was freed: a draining node that is now idle says so at once. */
  slotFreed(): void;
  /** The node leaves: draining, a last heartbeat, then no more. */
  drain(): Promise<void>;
  /** Stops the heartbeat and removes the node's record. */
  close(): Promise<void>;
}

/** One node's membership of its pool: registration, heartbeat, drain and undrain, quarantine. */
export function createNodeMembership(o: NodeMembershipOptions): NodeMembership {
  const after = o.quarantineAfter ?? QUARANTINE_AFTER;
  const log = o.logger.child({ node: o.nodeId, arch: o.arch });
  let state: NodeState = 'active';
  let quarantineReason: string | undefined;
  let window: QuarantineWindow = [];
  let leaving = false;
  let heartbeat: NodeJS.Timeout | undefined;
  let reported = '';

  async function reportImages(): Promise<void> {
    if (!o.heldImages) return;
    const held = await o.heldImages();
    const text = JSON.stringify(held);
    if (text === reported) return;
    await o.nodes.setImages(o.nodeId, held);
    reported = text;
  }

  async function applyControl(drainRequested: boolean, fromMessage: boolean): Promise<void> {
    if (leaving) return;
    if (drainRequested && state !== 'draining') {
      state = 'draining';
      log.info({ running: o.busy() }, 'drain requested: no new jobs; leaving once the running ones finish');
      o.pause();
    } else if (!drainRequested && fromMessage && (state === 'draining' || state === 'quarantined')) {
      state = 'active';
      quarantineReason = undefined;
      window = [];
      o.resume();
      log.info('undrained: taking jobs again');
    }
    if (state === 'draining' && drainRequested && o.busy() === 0) o.leave();
  }

  const beat = async () => {
    try {
      const r = await o.nodes.heartbeat(o.nodeId, {
        busy: o.busy(),
        state,
        ...(quarantineReason ? { quarantineReason } : {}),
      });
      await applyControl(r.drainRequested, false);
      await reportImages();
    } catch (err) {
      log.warn({ err: toError(err).message }, 'heartbeat failed');
    }
  };

  return {
    get state() {
      return state;
    },
    async start() {
      await o.nodes.register({
        id: o.nodeId,
        arch: o.arch,
        hostArch: process.arch,
        emulated: o.emulated,
        slots: o.slots,
        busy: 0,
        state,
        version: o.version,
        startedAt: new Date().toISOString(),
      });
      await reportImages().catch((err: unknown) =>
        log.warn({ err: toError(err).message }, 'could not report the images the node holds'),
      );
      heartbeat = setInterval(beat, HEARTBEAT_MS);
    },
    beat,
    async declines() {
      if (state !== 'active') return true;
      if (!(await o.nodes.isDrainRequested(o.nodeId))) return false;
      await applyControl(true, false);
      return true;
    },
    note(jobId, host, why) {
      const r = noteAttempt(window, jobId, host, after);
      window = r.window;
      if (state !== 'active' || !r.quarantine) return;
      state = 'quarantined';
      quarantineReason = `the last ${after} attempts errored on this host (last: ${why ?? 'unknown'})`;
      log.error(
        { reason: quarantineReason },
        'node quarantined: it takes no more jobs until an operator undrains it',
      );
      o.events.emit('node:quarantine', { reason: quarantineReason });
      o.pause();
      void beat();
    },
    async controlMessage() {
      try {
        const n = await o.nodes.get(o.nodeId);
        await applyControl(n?.drainRequested ?? false, true);
      } catch (err) {
        log.warn({ err: toError(err).message }, 'could not apply a drain request');
      }
    },
    slotFreed() {
      if (state === 'draining' && o.busy() === 0) void beat();
    },
    async drain() {
      leaving = true;
      state = 'draining';
      await beat();
    },
    async close() {
      clearInterval(heartbeat);
      await o.nodes.deregister(o.nodeId).catch(() => undefined);
    },
  };
}
