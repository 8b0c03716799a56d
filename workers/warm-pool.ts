import PQueue from 'p-queue';
import type { ImageStore, ResolvedImage } from '../images/index.ts';
import { type Limits, type Logger, type NetworkMode, toError } from '../src/core/index.ts';
import type { Container, ContainerRuntime } from './container-runtime.ts';

export interface WarmPoolOptions {
  runtime: ContainerRuntime;
  images: ImageStore;
  /** How many warm containers to keep per image name (of the runtime's arch), for each network mode. */
  targets: Readonly<Record<string, number>>;
  /** Network modes kept warm, each with the targets above. Default `none` only. */
  networks?: readonly NetworkMode[];
  /** Limits warm containers are made with; a job with other limits has them applied at exec. */
  limits: Limits;
  logger: Logger;
  /** Containers made at once. Default 1: on a small host, making containers competes with running jobs. */
  concurrency?: number;
  /**
   * Demand: a job of an image with no target (it started cold) adds a target of `per` for that
   * image in every network mode, while all targets together stay within `max` warm containers
   * (each holds a host uid range). Targets are never removed. Default: no adoption.
   */
  adopt?: { max: number; per: number };
}

export interface WarmPool {
  /** Starts filling every target in the background. */
  start(): void;
  /** A ready container of exactly this image version and network, now the caller's; undefined when none is ready. */
  take(image: ResolvedImage, network?: NetworkMode): Container | undefined;
  /** Destroys the ready containers of an older version of `image` (after an image sync switched it) and makes current ones. */
  dropStale(image: ResolvedImage): void;
  /** Ready containers per image name (`name` for network none, `name/egress` for egress). */
  sizes(): Record<string, number>;
  /** Settles when every target is met (or the pool is closed). */
  filled(): Promise<void>;
  /** Stops refilling and destroys every container still waiting. Idempotent. */
  close(): Promise<void>;
}

const RETRY_AFTER_FAILURE_MS = 2000;

/** Keeps N containers per image created and started, so a job is only an exec away. */
export function createWarmPool(o: WarmPoolOptions): WarmPool {
  const networks = o.networks ?? ['none'];
  /** One pool per image name and network mode: `name` (none) or `name/egress`. */
  const keyOf = (name: string, network: NetworkMode) => (network === 'none' ? name : `${name}/${network}`);
  const targets: Record<string, { name: string; network: NetworkMode; n: number }> = {};
  for (const [name, n] of Object.entries(o.targets))
    for (const network of networks) targets[keyOf(name, network)] = { name, network, n };
  const targeted = () => Object.values(targets).reduce((n, t) => n + t.n, 0);
  /** Adds targets for an image a job asked for, when they fit; true when it did. */
  const adopt = (name: string): boolean => {
    const a = o.adopt;
    if (!a || a.per <= 0 || closing.signal.aborted) return false;
    if (networks.some((network) => targets[keyOf(name, network)])) return false;
    if (targeted() + a.per * networks.length > a.max) return false;
    for (const network of networks) targets[keyOf(name, network)] = { name, network, n: a.per };
    o.logger.info({ image: name, per: a.per, networks }, 'a job asked for this image: keeping it warm too');
    for (const network of networks) refill(keyOf(name, network));
    return true;
  };
  const ready = new Map<string, Container[]>();
  const pending = new Map<string, number>();
  const make = new PQueue({ concurrency: o.concurrency ?? 1 });
  const discard = new PQueue({ concurrency: 2 });
  const closing = new AbortController();
  const waiters: (() => void)[] = [];
  let closed: Promise<void> | undefined;

  const isFilled = () => Object.entries(targets).every(([key, t]) => (ready.get(key)?.length ?? 0) >= t.n);
  const notify = () => {
    if (isFilled() || closing.signal.aborted) for (const w of waiters.splice(0)) w();
  };

  const drop = (c: Container) =>
    void discard.add(() =>
      o.runtime
        .destroy(c, {})
        .catch((err: unknown) => o.logger.error({ err, id: c.id }, 'destroying a warm container failed')),
    );

  function refill(key: string): void {
    const t = targets[key];
    if (!t) return;
    while (!closing.signal.aborted && (ready.get(key)?.length ?? 0) + (pending.get(key) ?? 0) < t.n) {
      pending.set(key, (pending.get(key) ?? 0) + 1);
      void make.add(async () => {
        let failed = false;
        try {
          const image = await o.images.resolve(t.name, o.runtime.arch);
          const c = await o.runtime.prepare(image, o.limits, {
            signal: closing.signal,
            deadline: Date.now() + 120_000,
            network: t.network,
          });
          if (closing.signal.aborted) drop(c);
          else ready.set(key, [...(ready.get(key) ?? []), c]);
        } catch (e) {
          failed = !closing.signal.aborted;
          if (failed)
            o.logger.error(
              { err: toError(e), image: t.name, network: t.network, arch: o.runtime.arch },
              'making a warm container failed',
            );
        } finally {
          pending.set(key, (pending.get(key) ?? 1) - 1);
          notify();
        }
        if (failed) setTimeout(() => refill(key), RETRY_AFTER_FAILURE_MS).unref();
        else refill(key);
      });
    }
  }

  return {
    start() {
      for (const key of Object.keys(targets)) refill(key);
      notify();
    },
    take(image, network = 'none') {
      const key = keyOf(image.name, network);
      // The image resolved (the launcher resolves before it takes): it exists, so it may be adopted.
      if (!targets[key]) {
        if (networks.includes(network)) adopt(image.name);
        return undefined;
      }
      const list = ready.get(key) ?? [];
      // Containers of an older version are never handed out: drop them, the refill makes current ones.
      const stale = list.filter((c) => c.image.digest !== image.digest);
      const fresh = list.filter((c) => c.image.digest === image.digest);
      for (const c of stale) drop(c);
      const taken = fresh.shift();
      ready.set(key, fresh);
      if (taken || stale.length) refill(key);
      return taken;
    },
    dropStale(image) {
      for (const network of networks) {
        const key = keyOf(image.name, network);
        const list = ready.get(key) ?? [];
        const stale = list.filter((c) => c.image.digest !== image.digest);
        if (stale.length === 0) continue;
        ready.set(
          key,
          list.filter((c) => c.image.digest === image.digest),
        );
        for (const c of stale) drop(c);
        refill(key);
      }
    },
    sizes() {
      return Object.fromEntries(Object.keys(targets).map((k) => [k, ready.get(k)?.length ?? 0]));
    },
    filled() {
      return isFilled() || closing.signal.aborted
        ? Promise.resolve()
        : new Promise<void>((r) => waiters.push(r));
    },
    close() {
      closed ??= (async () => {
        // Order: stop new work, let the in-flight creations finish (they drop what they made), then destroy the rest.
        closing.abort(new Error('warm pool closing'));
        notify();
        make.clear();
        await make.onIdle();
        for (const list of ready.values()) for (const c of list.splice(0)) drop(c);
        await discard.onIdle();
      })();
      return closed;
    },
  };
}
