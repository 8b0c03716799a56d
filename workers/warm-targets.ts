import type { ImageStore } from '../images/index.ts';
import type { Arch } from '../src/core/index.ts';

/**
 * Images a node warms first when it warms what it holds: the image of repository builds that
 * name none (webhooks' `DEFAULT_IMAGE`), so the most common job starts warm.
 */
export const PREFERRED_WARM_IMAGES: readonly string[] = ['debian-bookworm-build'];

export interface WarmTargetsOptions {
  /** Images the operator listed (`ARCHWAY_WARM_IMAGES`, `--warm-images`), in order. Empty: `held`. */
  listed: readonly string[];
  /** Images the node holds for its arch. */
  held: readonly string[];
  /** Warm containers per image and network mode (`--warm`). */
  warm: number;
  /** Network modes each image is kept warm in (1 or 2: `none`, and `egress` when it is on). */
  networks: number;
  /** Most warm containers of the node, every image and network together (`ARCHWAY_WARM_MAX`). */
  max: number;
  /** Held images warmed first, in this order. Default `PREFERRED_WARM_IMAGES`. */
  prefer?: readonly string[];
}

export interface WarmTargets {
  /** Warm containers per image name, for each network mode: what `createWarmPool` takes. */
  targets: Record<string, number>;
  /** Warm containers per image and network mode that fit `max` (what an adopted image gets too). */
  per: number;
  /** Images wanted warm but left cold by `max`. */
  cold: string[];
  /**
   * Listed images the node does not hold, left cold: a pool for them would fail and retry every
   * 2 s for ever. The list is read when the worker starts, after its first image sync.
   */
  missing: string[];
}

/**
 * Which images a node keeps warm, and how many of each. Every warm container holds one of the
 * host's uid ranges until a job takes it (`ARCHWAY_UID_RANGES`, shared by every worker of the
 * host), so the total is capped at `max`: images are taken in order while they fit, and each gets
 * at most `max / networks`.
 */
export function chooseWarmTargets(o: WarmTargetsOptions): WarmTargets {
  const prefer = o.prefer ?? PREFERRED_WARM_IMAGES;
  const held = [...new Set(o.held)].sort();
  const wanted = o.listed.length
    ? [...new Set(o.listed)].filter((n) => held.includes(n))
    : [...prefer.filter((n) => held.includes(n)), ...held.filter((n) => !prefer.includes(n))];
  const per = Math.min(o.warm, Math.floor(o.max / Math.max(1, o.networks)));
  const targets: Record<string, number> = {};
  const cold: string[] = [];
  let used = 0;
  for (const name of wanted) {
    const cost = per * o.networks;
    if (per > 0 && used + cost <= o.max) {
      targets[name] = per;
      used += cost;
    } else cold.push(name);
  }
  return { targets, per, cold, missing: o.listed.filter((n) => !held.includes(n)) };
}

/** `chooseWarmTargets` with `held` read from the node's image store: the current images of `arch`. */
export async function warmTargetsOf(
  store: ImageStore,
  arch: Arch,
  o: Omit<WarmTargetsOptions, 'held'>,
): Promise<WarmTargets> {
  const held = (await store.list()).filter((v) => v.arch === arch && v.current).map((v) => v.name);
  return chooseWarmTargets({ ...o, held });
}
