import { type Arch, ImageRef } from '../src/core/index.ts';
import type { ImageCatalog } from './image-catalog.ts';
import type { NodeRegistry } from './node-registry.ts';

/**
 * Where an image of an arch is. Found: the catalog's current version it is (`published`: when
 * it was published; every node of the arch syncs it), and the live nodes that hold it. Not found:
 * the image names that do exist for the arch (empty when nothing is known: no catalog entry and
 * no live node that reports images).
 */
export type ImageLookup =
  | { found: true; published?: string | undefined; heldBy: string[] }
  | { found: false; known: string[] };

export interface FindImageOptions {
  catalog?: ImageCatalog | undefined;
  nodes: NodeRegistry;
  /** A node whose own images do not count (the node that asks, and lacks it). */
  exceptNode?: string | undefined;
}

/**
 * Whether an image (`name` or `name@sha256:...`) can run on an arch: it is the catalog's current
 * version (which nodes sync), or a live node of the arch reports it holds it. An older version
 * that is still in the catalog but on no node counts as missing: no node fetches it again.
 */
export async function findImage(o: FindImageOptions, image: string, arch: Arch): Promise<ImageLookup> {
  const ref = ImageRef.safeParse(image);
  if (!ref.success) return { found: false, known: [] };
  const { name, digest } = ref.data;
  const current = await o.catalog?.current(name, arch);
  const published = current && (!digest || current.digest === digest) ? current.publishedAt : undefined;
  const live = (await o.nodes.live(arch)).filter((n) => n.id !== o.exceptNode);
  const heldBy = live
    .filter((n) =>
      n.images.some((i) => i.arch === arch && i.name === name && (digest ? i.digest === digest : i.current)),
    )
    .map((n) => n.id);
  if (published || heldBy.length > 0) return { found: true, published, heldBy };
  const catalogued = ((await o.catalog?.list()) ?? []).filter((e) => e.arch === arch).map((e) => e.name);
  const held = live.flatMap((n) => n.images).filter((i) => i.arch === arch);
  return { found: false, known: [...new Set([...catalogued, ...held.map((i) => i.name)])].sort() };
}
