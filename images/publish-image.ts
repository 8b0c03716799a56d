import { join } from 'node:path';
import type { CatalogEntry, ImageBlob, ImageCatalog } from '../queue/index.ts';
import { AbortedError, type Arch, isSubvolume, type Logger, toError } from '../src/core/index.ts';
import { hasBlob, sweepBlobs, writeBlob } from './blob-store.ts';
import { spawnHostPipe } from './host-pipe.ts';
import type { ImageStore } from './image-store.ts';

export interface PublishImageOptions {
  store: ImageStore;
  catalog: ImageCatalog;
  /** The blob store's directory (blobs go to `sha256/<hex>` in it). */
  blobDir: string;
  logger: Logger;
  signal?: AbortSignal | undefined;
  /** zstd level. Default 3 (zstd's own default: fast, and most of the gain of higher levels). */
  zstdLevel?: number;
}

export interface PublishResult {
  entry: CatalogEntry;
  /** False when this version was already the catalog's current one (nothing was written). */
  published: boolean;
}

/**
 * Publishes the current version of image `name` for `arch` on this host: a full blob (`btrfs send`)
 * and, when this host still holds the version published before, an incremental one
 * (`btrfs send -p`), each zstd-compressed and stored under its sha256; then records the version in
 * the catalog and announces it on the events stream. Publishing the current version again does nothing.
 */
export async function publishImage(name: string, arch: Arch, o: PublishImageOptions): Promise<PublishResult> {
  const image = await o.store.resolve(name, arch);
  const previous = await o.catalog.current(name, arch);
  if (
    previous?.digest === image.digest &&
    (await hasBlob(o.blobDir, previous.full)) &&
    (!previous.incremental || (await hasBlob(o.blobDir, previous.incremental)))
  ) {
    return { entry: previous, published: false };
  }
  const parentDigest = previous && previous.digest !== image.digest ? previous.digest : undefined;
  const parentPath = parentDigest ? join(o.store.dirOf(name, arch), parentDigest) : undefined;
  const withParent = parentPath !== undefined && (await isSubvolume(parentPath)) ? parentPath : undefined;
  if (parentDigest && !withParent)
    o.logger.info(
      { image: name, arch, parent: parentDigest },
      'this host no longer holds the version published before: publishing the full version only',
    );
  const started = Date.now();
  const level = o.zstdLevel ?? 3;
  const full = await sendToBlob(image.path, undefined, o.blobDir, level, o.signal);
  const incremental = withParent
    ? await sendToBlob(image.path, withParent, o.blobDir, level, o.signal)
    : null;
  const entry: CatalogEntry = {
    name: image.name,
    arch,
    digest: image.digest,
    parent: incremental ? (parentDigest ?? null) : null,
    sizeBytes: image.sizeBytes,
    description: image.description,
    createdAt: image.createdAt,
    publishedAt: new Date().toISOString(),
    full,
    incremental,
  };
  await o.catalog.publish(entry);
  o.logger.info(
    {
      image: name,
      arch,
      digest: image.digest,
      parent: entry.parent,
      fullBytes: full.sizeBytes,
      incrementalBytes: incremental?.sizeBytes ?? null,
      ms: Date.now() - started,
    },
    'image published',
  );
  // The blobs of versions the catalog dropped (and a crashed write's leftovers) go.
  const swept = await sweepBlobs(o.blobDir, await o.catalog.referencedBlobs()).catch((e: unknown) => {
    o.logger.warn({ err: toError(e).message }, 'sweeping the blob store failed');
    return [];
  });
  if (swept.length) o.logger.info({ blobs: swept.length }, 'removed blobs no catalog version names');
  return { entry, published: true };
}

/** `btrfs send [-p parent] path | zstd` into the blob store. */
async function sendToBlob(
  path: string,
  parent: string | undefined,
  blobDir: string,
  level: number,
  signal: AbortSignal | undefined,
): Promise<ImageBlob> {
  if (signal?.aborted) throw new AbortedError('publish', signal.reason);
  const send = spawnHostPipe('btrfs', ['send', '-q', ...(parent ? ['-p', parent] : []), path], {
    stdin: 'ignore',
    label: 'btrfs send',
  });
  if (!send.proc.stdout) throw new Error('btrfs send has no stdout');
  const zstd = spawnHostPipe('zstd', ['-q', '-c', `-${level}`, '-T0'], {
    stdin: send.proc.stdout,
    label: 'zstd',
  });
  // The child has the pipe now; node must not read it too.
  send.proc.stdout.destroy();
  const stop = () => {
    send.kill();
    zstd.kill();
  };
  signal?.addEventListener('abort', stop, { once: true });
  try {
    if (!zstd.proc.stdout) throw new Error('zstd has no stdout');
    return await writeBlob(blobDir, zstd.proc.stdout, () => Promise.all([send.done, zstd.done]));
  } catch (e) {
    stop();
    await Promise.allSettled([send.done, zstd.done]);
    if (signal?.aborted) throw new AbortedError('publish', signal.reason);
    throw toError(e);
  } finally {
    signal?.removeEventListener('abort', stop);
  }
}
