import { type Arch, ImageRef } from '../src/core/index.ts';
import type { ImageCatalog } from './image-catalog.ts';
import type { NodeRegistry } from './node-registry.ts';

/** Where an image of an arch is: found (in the catalog, or held by a live node), or not, with the images that are. */
export type ImageLookup = { found: true } | { found: false; known: string[] };

export interface FindImageOptions {
  catalog?: ImageCatalog | undefined;
  nodes: NodeRegistry;
  /** A node whose own images do not count (the node that asks, and lacks it). */
  exceptNode?: string | undefined;
}

/**
 * Whether an image (`name` or `name@sha256:...`) exists for an arch: a version in the catalog, or
 * one a live node of the arch reports it holds. `known` lists the image names that do exist for
 * the arch (empty when nothing is known: no catalog entry and no live node that reports images).
 */
export async function findImage(o: FindImageOptions, image: string, arch: Arch): Promise<ImageLookup> {
  const ref = ImageRef.safeParse(image);
  if (!ref.success) return { found: false, known: [] };
  const { name, digest } = ref.data;
  const inCatalog = digest
    ? await o.catalog?.version(name, arch, digest)
    : await o.catalog?.current(name, arch);
  if (inCatalog) return { found: true };
  const live = (await o.nodes.live(arch)).filter((n) => n.id !== o.exceptNode);
  const held = live.flatMap((n) => n.images).filter((i) => i.arch === arch);
  if (held.some((i) => i.name === name && (digest ? i.digest === digest : i.current))) return { found: true };
  const catalogued = ((await o.catalog?.list()) ?? []).filter((e) => e.arch === arch).map((e) => e.name);
  return { found: false, known: [...new Set([...catalogued, ...held.map((i) => i.name)])].sort() };
}
