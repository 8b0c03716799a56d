import { EventEmitter } from 'node:events';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import PQueue from 'p-queue';
import type { CatalogEntry, HeldImage, ImageBlob, ImageCatalog } from '../queue/index.ts';
import {
  AbortedError,
  type Arch,
  BlobDigestMismatchError,
  isSubvolume,
  type Logger,
  toError,
} from '../src/core/index.ts';
import { downloadBlob } from './download-blob.ts';
import type { ImageStore, ResolvedImage } from './image-store.ts';
import { type IdRange, imageForRange, rangeCopiesOf, removeRangeCopies } from './range-copies.ts';
import { removeStaging, STAGING_PREFIX, verifyAndReceive } from './verify-and-receive.ts';

export type SyncKind = 'full' | 'incremental';

/** What the agent reports as it works (besides its log lines). */
export interface SyncAgentEvents {
  /** A version was received, verified and made current. */
  'image:synced': [{ name: string; arch: Arch; digest: string; kind: SyncKind; blob: ImageBlob; ms: number }];
  /** A blob was refused (corrupt, truncated, or receive failed); nothing of it was kept. */
  'image:rejected': [
    { name: string; arch: Arch; digest: string; kind: SyncKind; blob: ImageBlob; error: Error },
  ];
  /** A replaced version was removed once nothing used it. */
  'image:removed': [{ name: string; arch: Arch; digest: string }];
}

export interface SyncAgentOptions {
  /** The arch this node serves: only images of it are synced. */
  arch: Arch;
  store: ImageStore;
  catalog: ImageCatalog;
  /** A Redis connection of the agent's own, for XREAD BLOCK on the events stream; close() disconnects it. */
  blockingRedis: Redis;
  /** The API that serves blobs. */
  apiUrl: string;
  /** Bearer token with the read scope. */
  token?: string | undefined;
  logger: Logger;
  /**
   * Digests of image versions that running jobs or warm containers use on this pool: such a
   * version is kept after a switch until it leaves this set. Default: none in use.
   */
  inUse?: () => Promise<ReadonlySet<string>>;
  /**
   * The host's uid range `index` (the worker's layout). With it, a new version gets its copies for
   * the uid ranges the version it replaces had, before it becomes current, so no launch waits for
   * one. Default: none made ahead (each is made when a container of its range first needs it).
   */
  idRange?: (index: number) => IdRange;
  /** Called once a new version is current (the worker drops warm containers of the old one). */
  onSwitch?: (image: ResolvedImage) => void | Promise<void>;
  /** Where the list of held versions goes after every change (the node's record). */
  report?: (held: HeldImage[]) => Promise<void>;
  /** A replaced version is removed no sooner than this after the switch (a launch that resolved it just before needs a moment to snapshot it). Default 10 000. */
  retireAfterMs?: number;
  /** The catalog is reconciled this often besides following events (retries failed syncs). Default 60 000. */
  reconcileEveryMs?: number;
  /** XREAD BLOCK timeout. Default 5000. */
  blockMs?: number;
  /** Injectable for tests. Default: the global fetch. */
  fetch?: typeof fetch;
}

export interface SyncAgent {
  readonly events: EventEmitter<SyncAgentEvents>;
  /** Reconciles against the catalog (waiting for the syncs that needs), then follows the events stream in the background. */
  start(): Promise<void>;
  /** The versions of this arch held on the pool. */
  held(): Promise<HeldImage[]>;
  /** Sends `held()` to `report`. */
  reportHeld(): Promise<void>;
  /** Settles when no sync is queued or running. */
  idle(): Promise<void>;
  /** Stops following, aborts a sync in progress (its staging is deleted), disconnects the blocking connection. Idempotent. */
  close(): Promise<void>;
}

/** At most this many incrementals are chained to reach the current version; beyond, the full one is cheaper to reason about. */
const MAX_CHAIN = 8;
/** A blob that failed its digest is not tried again for this long (unless the catalog moves on). */
const BAD_BLOB_MS = 10 * 60_000;

interface Step {
  entry: CatalogEntry;
  kind: SyncKind;
  blob: ImageBlob;
}

/**
 * The image sync agent a worker runs: keeps this pool's images of one arch at the catalog's
 * current versions. It reconciles at start and every `reconcileEveryMs`, follows the events
 * stream, receives each missing version (incremental from a held parent, else full) with its
 * digest verified while it streams, switches `current` atomically, and removes the replaced
 * version once no job or warm container uses it.
 */
export function createSyncAgent(o: SyncAgentOptions): SyncAgent {
  const events = new EventEmitter<SyncAgentEvents>();
  const log = o.logger.child({ component: 'image-sync', arch: o.arch });
  const queue = new PQueue({ concurrency: 1 });
  const queued = new Set<string>();
  const closing = new AbortController();
  const bad = new Map<string, number>();
  /** Errors already logged where they happened, so the queue's catch does not log them twice. */
  const logged = new WeakSet<Error>();
  /** Replaced versions waiting for removal: key `name@digest`. */
  const retiring = new Map<string, { name: string; digest: string; since: number }>();
  const retireAfterMs = o.retireAfterMs ?? 10_000;
  let started: Promise<void> | undefined;
  let closed: Promise<void> | undefined;
  let loop: Promise<void> | undefined;
  let reconcileTimer: NodeJS.Timeout | undefined;
  let sweepTimer: NodeJS.Timeout | undefined;
  let sweeping = false;

  const holds = (name: string, digest: string) => isSubvolume(join(o.store.dirOf(name, o.arch), digest));
  /** Held and recorded: a subvolume without its record is one a crash left before the commit. */
  const committed = async (name: string, digest: string) =>
    (await o.store.resolve(`${name}@${digest}`, o.arch).catch(() => undefined)) !== undefined;
  const isBad = (blob: ImageBlob) => (bad.get(blob.digest) ?? 0) > Date.now();

  async function held(): Promise<HeldImage[]> {
    return (await o.store.list())
      .filter((i) => i.arch === o.arch)
      .map((i) => ({ name: i.name, arch: i.arch, digest: i.digest, current: i.current }));
  }

  async function reportHeld(): Promise<void> {
    if (!o.report) return;
    try {
      await o.report(await held());
    } catch (e) {
      log.warn({ err: toError(e).message }, 'image sync: reporting the held images failed');
    }
  }

  /** The cheapest way to the target: incrementals from a held ancestor, else the full version. */
  async function plan(target: CatalogEntry): Promise<Step[]> {
    const full: Step[] = [{ entry: target, kind: 'full', blob: target.full }];
    const chain: Step[] = [];
    let bytes = 0;
    let cur: CatalogEntry | undefined = target;
    while (cur?.incremental && cur.parent && chain.length < MAX_CHAIN && !isBad(cur.incremental)) {
      chain.unshift({ entry: cur, kind: 'incremental', blob: cur.incremental });
      bytes += cur.incremental.sizeBytes;
      if (bytes >= target.full.sizeBytes) return full;
      if (await holds(target.name, cur.parent)) return chain;
      cur = await o.catalog.version(target.name, o.arch, cur.parent);
    }
    return full;
  }

  async function receive(step: Step): Promise<void> {
    const { entry, kind, blob } = step;
    const what = { image: entry.name, arch: o.arch, digest: entry.digest, kind, blob: blob.digest };
    const t0 = Date.now();
    log.info({ ...what, bytes: blob.sizeBytes }, 'image sync: receiving a new version');
    try {
      await verifyAndReceive({
        chunks: downloadBlob({
          apiUrl: o.apiUrl,
          token: o.token,
          blob,
          signal: closing.signal,
          ...(o.fetch ? { fetch: o.fetch } : {}),
        }),
        blob,
        dir: o.store.dirOf(entry.name, o.arch),
        name: entry.digest,
        signal: closing.signal,
      });
    } catch (e) {
      const err = toError(e);
      if (closing.signal.aborted || err instanceof AbortedError) throw err;
      if (err instanceof BlobDigestMismatchError) bad.set(blob.digest, Date.now() + BAD_BLOB_MS);
      log.error({ ...what, err: err.message }, 'image sync: version rejected; nothing of it was kept');
      events.emit('image:rejected', {
        name: entry.name,
        arch: o.arch,
        digest: entry.digest,
        kind,
        blob,
        error: err,
      });
      logged.add(err);
      throw err;
    }
    await copyRangesAhead(entry.name, entry.digest);
    const image = await o.store.commit({
      name: entry.name,
      arch: o.arch,
      digest: entry.digest,
      sizeBytes: entry.sizeBytes,
      createdAt: entry.createdAt,
      description: entry.description,
    });
    const ms = Date.now() - t0;
    log.info(
      {
        ...what,
        bytes: blob.sizeBytes,
        ms,
        mibPerSecond: Number((blob.sizeBytes / 2 ** 20 / (ms / 1000)).toFixed(1)),
      },
      'image sync: received and verified; new jobs get this version',
    );
    events.emit('image:synced', { name: entry.name, arch: o.arch, digest: entry.digest, kind, blob, ms });
    try {
      await o.onSwitch?.(image);
    } catch (e) {
      log.warn({ ...what, err: toError(e).message }, 'image sync: the switch hook failed');
    }
  }

  /** The received version's copies for every uid range the current version has one for. */
  async function copyRangesAhead(name: string, digest: string): Promise<void> {
    if (!o.idRange) return;
    const current = await o.store.resolve(name, o.arch).catch(() => undefined);
    if (!current || current.digest === digest) return;
    const ranges = await rangeCopiesOf(current.path);
    if (ranges.length === 0) return;
    const path = join(o.store.dirOf(name, o.arch), digest);
    const t0 = Date.now();
    try {
      for (const k of ranges) {
        if (closing.signal.aborted) return;
        await imageForRange({ path }, o.idRange(k));
      }
      log.info(
        { image: name, arch: o.arch, digest, ranges, ms: Date.now() - t0 },
        'image sync: made the uid range copies the replaced version had',
      );
    } catch (e) {
      // Not fatal: a container of that range makes its copy when it needs it.
      log.warn(
        { image: name, digest, err: toError(e).message },
        'image sync: making uid range copies failed',
      );
    }
  }

  async function syncImage(name: string): Promise<void> {
    const target = await o.catalog.current(name, o.arch);
    if (!target) return;
    if (!(await committed(name, target.digest))) {
      const steps = await plan(target);
      if (steps.every((s) => !isBad(s.blob))) {
        try {
          for (const step of steps) await receive(step);
        } catch (e) {
          if (closing.signal.aborted) return;
          // A held parent that does not match (or a bad incremental): the full version still gets there.
          if (steps[0]?.kind !== 'incremental' || isBad(target.full)) throw e;
          log.warn(
            { image: name, arch: o.arch, digest: target.digest, err: toError(e).message },
            'image sync: the incremental failed; taking the full version',
          );
          await receive({ entry: target, kind: 'full', blob: target.full });
        }
      }
    }
    await markRetiring(name, target.digest);
  }

  /** Every version of `name` but the current one (and the catalog's) is to be removed once unused. */
  async function markRetiring(name: string, catalogDigest: string): Promise<void> {
    const now = Date.now();
    for (const v of await o.store.list()) {
      if (v.name !== name || v.arch !== o.arch || v.current || v.digest === catalogDigest) continue;
      const key = `${name}@${v.digest}`;
      if (!retiring.has(key)) retiring.set(key, { name, digest: v.digest, since: now });
    }
    await reportHeld();
    await sweep();
  }

  async function sweep(): Promise<void> {
    if (sweeping || closing.signal.aborted) return;
    sweeping = true;
    clearTimeout(sweepTimer);
    let changed = false;
    try {
      if (retiring.size === 0) return;
      const used = (await o.inUse?.()) ?? new Set<string>();
      for (const [key, r] of retiring) {
        if (Date.now() - r.since < retireAfterMs || used.has(r.digest)) continue;
        retiring.delete(key);
        const current = await o.store.resolve(r.name, o.arch).catch(() => undefined);
        if (current?.digest === r.digest) continue;
        try {
          await o.store.remove(r.name, o.arch, r.digest);
          changed = true;
          log.info(
            { image: r.name, arch: o.arch, digest: r.digest },
            'image sync: removed a replaced version (no job or warm container uses it)',
          );
          events.emit('image:removed', { name: r.name, arch: o.arch, digest: r.digest });
        } catch (e) {
          log.warn(
            { image: r.name, digest: r.digest, err: toError(e).message },
            'image sync: removing a version failed',
          );
        }
      }
    } catch (e) {
      log.warn({ err: toError(e).message }, 'image sync: checking replaced versions failed');
    } finally {
      sweeping = false;
      if (retiring.size > 0 && !closing.signal.aborted)
        sweepTimer = setTimeout(() => void sweep(), 1000).unref();
    }
    if (changed) await reportHeld();
  }

  function enqueue(name: string): void {
    if (queued.has(name) || closing.signal.aborted) return;
    queued.add(name);
    void queue.add(async () => {
      queued.delete(name);
      try {
        await syncImage(name);
      } catch (e) {
        const err = toError(e);
        if (closing.signal.aborted) return;
        if (logged.has(err)) log.info({ image: name }, 'image sync: retried at the next reconcile');
        else log.error({ image: name, err: err.message }, 'image sync failed; retried at the next reconcile');
      }
    });
  }

  async function reconcile(): Promise<void> {
    for (const e of await o.catalog.list()) if (e.arch === o.arch) enqueue(e.name);
  }

  /** Staging directories of processes that are gone (a crash mid-receive), and range copies of versions not held. */
  async function removeStaleStaging(): Promise<void> {
    for (const name of await readdir(o.store.root).catch(() => [] as string[])) {
      const dir = o.store.dirOf(name, o.arch);
      for (const entry of await readdir(dir).catch(() => [] as string[])) {
        const version = entry.endsWith('.ranges') ? entry.slice(0, -'.ranges'.length) : undefined;
        if (version && !(await holds(name, version))) {
          await removeRangeCopies(join(dir, version));
          log.info(
            { image: name, digest: version },
            'image sync: removed uid range copies of a version not held',
          );
          continue;
        }
        if (!entry.startsWith(STAGING_PREFIX)) continue;
        const pid = Number(entry.slice(STAGING_PREFIX.length).split('-')[0]);
        if (pid === process.pid || isAlive(pid)) continue;
        await removeStaging(join(dir, entry));
        log.info({ staging: join(dir, entry) }, 'image sync: removed what an interrupted receive left');
      }
    }
  }

  async function follow(after: string): Promise<void> {
    let last = after;
    while (!closing.signal.aborted) {
      try {
        const { events: evs, lastId } = await o.catalog.readEvents(o.blockingRedis, last, o.blockMs ?? 5000);
        last = lastId;
        for (const ev of evs) {
          if (ev.arch !== o.arch) continue;
          log.info(
            { image: ev.name, arch: ev.arch, digest: ev.digest },
            'image sync: a new version was published',
          );
          enqueue(ev.name);
        }
      } catch (e) {
        if (closing.signal.aborted) break;
        log.warn({ err: toError(e).message }, 'image sync: reading the events stream failed; retrying');
        await new Promise((r) => setTimeout(r, 1000).unref());
      }
    }
  }

  return {
    events,
    held,
    reportHeld,
    start() {
      started ??= (async () => {
        // The events from here on are followed; everything before is in the catalog.
        const after = await o.catalog.lastEventId();
        await removeStaleStaging();
        await reconcile();
        await queue.onIdle();
        if (closing.signal.aborted) return;
        await reportHeld();
        loop = follow(after);
        reconcileTimer = setInterval(
          () =>
            void reconcile().catch((e: unknown) =>
              log.warn({ err: toError(e).message }, 'image sync: reconciling failed'),
            ),
          o.reconcileEveryMs ?? 60_000,
        ).unref();
      })();
      return started;
    },
    idle: () => queue.onIdle(),
    close() {
      closed ??= (async () => {
        // Order: stop new work and abort the sync in progress (it deletes its staging), end the
        // follow by dropping its connection, then wait for both.
        closing.abort(new Error('image sync stopping'));
        clearInterval(reconcileTimer);
        clearTimeout(sweepTimer);
        queue.clear();
        o.blockingRedis.disconnect();
        await loop?.catch(() => undefined);
        await queue.onIdle();
      })();
      return closed;
    },
  };
}

function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
