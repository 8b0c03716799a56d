import type { Redis } from 'ioredis';
import { z } from 'zod';
import { Arch, Digest, ImageName, type Keys } from '../src/core/index.ts';

/** One blob of the blob store: a zstd-compressed `btrfs send` stream, named by the sha256 of its bytes. */
export const ImageBlob = z.object({
  /** `sha256:<hex>` of the compressed bytes. */
  digest: Digest,
  /** Compressed size, in bytes. */
  sizeBytes: z.int().nonnegative(),
});
export type ImageBlob = z.infer<typeof ImageBlob>;

/** One published version of an image for one arch, as the catalog records it. */
export const CatalogEntry = z.object({
  name: ImageName,
  arch: Arch,
  /** The image digest (what the builder named the version). */
  digest: Digest,
  /** The version published before this one, that `incremental` is a diff against; null for the first. */
  parent: Digest.nullable(),
  /** Apparent size of the image's tree, in bytes. */
  sizeBytes: z.int().nonnegative(),
  description: z.string().default(''),
  /** When the version was built. */
  createdAt: z.iso.datetime(),
  publishedAt: z.iso.datetime(),
  /** The whole version (`btrfs send`): for a node that lacks the parent. */
  full: ImageBlob,
  /** The diff against `parent` (`btrfs send -p`), when the publisher still held the parent. */
  incremental: ImageBlob.nullable(),
});
export type CatalogEntry = z.infer<typeof CatalogEntry>;

/** An entry of the image events stream: a version was published and is now current. */
export interface ImageEvent {
  /** The stream entry id; pass it back as `after` to read what follows. */
  id: string;
  type: 'image:publish';
  name: string;
  arch: Arch;
  digest: string;
}

/** Catalog versions kept per image and arch; older ones are dropped from the catalog (not from hosts). */
export const CATALOG_VERSIONS_KEPT = 20;
/** Approximate length the events stream is trimmed to (sync agents reconcile from the catalog anyway). */
const EVENTS_KEPT = 1000;

export interface ImageCatalog {
  /** Records a version, makes it current and announces it on the events stream, in one transaction. */
  publish(entry: CatalogEntry): Promise<ImageEvent>;
  /** The current version of an image for an arch. */
  current(name: string, arch: Arch): Promise<CatalogEntry | undefined>;
  /** A version still in the catalog. */
  version(name: string, arch: Arch, digest: string): Promise<CatalogEntry | undefined>;
  /** The current version of every image and arch, sorted by name then arch. */
  list(): Promise<CatalogEntry[]>;
  /** Digests of every blob (full and incremental) that a version still in the catalog names, of any image and arch. */
  referencedBlobs(): Promise<Set<string>>;
  /** The id of the newest event ('0-0' when none): read from there to see only what comes after. */
  lastEventId(): Promise<string>;
  /**
   * Events after `after`, waiting up to `blockMs` for one (XREAD BLOCK). `conn` must be a
   * connection of the caller's own: a blocked connection serves nothing else.
   */
  readEvents(conn: Redis, after: string, blockMs: number): Promise<{ events: ImageEvent[]; lastId: string }>;
}

const versionField = (digest: string) => `v:${digest}`;

function parseEntry(text: string | null | undefined): CatalogEntry | undefined {
  if (!text) return undefined;
  try {
    const parsed = CatalogEntry.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** The image catalog and its events stream in Redis (keys under the shared hash tag). */
export function createImageCatalog(redis: Redis, keys: Keys): ImageCatalog {
  async function version(name: string, arch: Arch, digest: string) {
    return parseEntry(await redis.hget(keys.imageCatalog(name, arch), versionField(digest)));
  }
  async function current(name: string, arch: Arch) {
    const digest = await redis.hget(keys.imageCatalog(name, arch), 'current');
    return digest ? version(name, arch, digest) : undefined;
  }
  return {
    async publish(entry) {
      const e = CatalogEntry.parse(entry);
      const key = keys.imageCatalog(e.name, e.arch);
      const res = await redis
        .multi()
        .hset(key, versionField(e.digest), JSON.stringify(e), 'current', e.digest)
        .sadd(keys.imagesAll, `${e.name}/${e.arch}`)
        .xadd(
          keys.imageEvents,
          'MAXLEN',
          '~',
          String(EVENTS_KEPT),
          '*',
          'type',
          'image:publish',
          'name',
          e.name,
          'arch',
          e.arch,
          'digest',
          e.digest,
        )
        .exec();
      const id = res?.[2]?.[1];
      if (typeof id !== 'string') throw new Error(`publishing ${e.name}/${e.arch} to the catalog failed`);
      // Keep the catalog small: the oldest versions go (a host that still holds one keeps it).
      const all = await redis.hgetall(key);
      const versions = Object.entries(all)
        .filter(([f]) => f.startsWith('v:'))
        .map(([f, v]) => ({ field: f, entry: parseEntry(v) }))
        .sort((a, b) => (b.entry?.publishedAt ?? '').localeCompare(a.entry?.publishedAt ?? ''));
      const drop = versions.slice(CATALOG_VERSIONS_KEPT).filter((v) => v.entry?.digest !== all.current);
      if (drop.length) await redis.hdel(key, ...drop.map((v) => v.field));
      return { id, type: 'image:publish', name: e.name, arch: e.arch, digest: e.digest };
    },
    current,
    version,
    async list() {
      const out: CatalogEntry[] = [];
      for (const member of (await redis.smembers(keys.imagesAll)).sort()) {
        const [name, arch] = member.split('/');
        const a = Arch.safeParse(arch);
        if (!name || !a.success) continue;
        const entry = await current(name, a.data);
        if (entry) out.push(entry);
      }
      return out;
    },
    async referencedBlobs() {
      const out = new Set<string>();
      for (const member of await redis.smembers(keys.imagesAll)) {
        const [name, arch] = member.split('/');
        const a = Arch.safeParse(arch);
        if (!name || !a.success) continue;
        for (const [field, text] of Object.entries(await redis.hgetall(keys.imageCatalog(name, a.data)))) {
          const e = field.startsWith('v:') ? parseEntry(text) : undefined;
          if (!e) continue;
          out.add(e.full.digest);
          if (e.incremental) out.add(e.incremental.digest);
        }
      }
      return out;
    },
    async lastEventId() {
      const last = await redis.xrevrange(keys.imageEvents, '+', '-', 'COUNT', 1);
      return last[0]?.[0] ?? '0-0';
    },
    async readEvents(conn, after, blockMs) {
      const res = (await conn.xread('COUNT', 100, 'BLOCK', blockMs, 'STREAMS', keys.imageEvents, after)) as
        | [string, [string, string[]][]][]
        | null;
      const entries = res?.[0]?.[1] ?? [];
      const events: ImageEvent[] = [];
      for (const [id, fields] of entries) {
        const f: Record<string, string> = {};
        for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i] as string] = fields[i + 1] as string;
        const arch = Arch.safeParse(f.arch);
        if (f.type !== 'image:publish' || !f.name || !f.digest || !arch.success) continue;
        events.push({ id, type: 'image:publish', name: f.name, arch: arch.data, digest: f.digest });
      }
      // Entries that are not events (skipped above) still move the reader on.
      return { events, lastId: entries.at(-1)?.[0] ?? after };
    },
  };
}
