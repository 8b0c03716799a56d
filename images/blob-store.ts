import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ImageBlob } from '../queue/index.ts';

/** Where a blob lives in the blob store: `<blobDir>/sha256/<hex>`. */
export function blobPath(blobDir: string, digest: string): string {
  return join(blobDir, 'sha256', digest.replace(/^sha256:/, ''));
}

/** True when the blob store holds `blob` with its full size. */
export async function hasBlob(blobDir: string, blob: ImageBlob): Promise<boolean> {
  try {
    return (await stat(blobPath(blobDir, blob.digest))).size === blob.sizeBytes;
  } catch {
    return false;
  }
}

/**
 * Writes what `source` yields into the blob store under the sha256 of its bytes, hashed as they
 * pass: to a temporary file first, synced, then renamed, so a reader never sees half a blob and a
 * crash leaves only a `.tmp-*` file. `complete` (the producer's exit) must succeed before the
 * rename: a producer that failed half-way leaves a well-formed but truncated stream.
 */
export async function writeBlob(
  blobDir: string,
  source: Readable,
  complete: () => Promise<unknown> = async () => undefined,
): Promise<ImageBlob> {
  const dir = join(blobDir, 'sha256');
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
  const hash = createHash('sha256');
  let sizeBytes = 0;
  try {
    await pipeline(
      source,
      async function* (chunks: AsyncIterable<Buffer>) {
        for await (const chunk of chunks) {
          hash.update(chunk);
          sizeBytes += chunk.length;
          yield chunk;
        }
      },
      // flush: fsync before close, so the rename below never publishes bytes still in the page cache only.
      createWriteStream(tmp, { flags: 'wx', mode: 0o644, flush: true }),
    );
    await complete();
    const blob: ImageBlob = { digest: `sha256:${hash.digest('hex')}`, sizeBytes };
    await rename(tmp, blobPath(blobDir, blob.digest));
    return blob;
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/** A blob (or a temporary file) younger than this is never swept: a publish may be between writing it and the catalog. */
export const BLOB_SWEEP_GRACE_MS = 60 * 60 * 1000;

/**
 * Removes from the blob store the blobs no version in the catalog names any more (it keeps the
 * last CATALOG_VERSIONS_KEPT per image and arch), and temporary files a crashed write left, once
 * they are older than BLOB_SWEEP_GRACE_MS. Without it, every publish left its blobs for ever
 * (a Debian image's full blob is about 40 MB). Returns the names removed.
 */
export async function sweepBlobs(
  blobDir: string,
  referenced: ReadonlySet<string>,
  now: number = Date.now(),
): Promise<string[]> {
  const dir = join(blobDir, 'sha256');
  const removed: string[] = [];
  for (const file of await readdir(dir).catch(() => [] as string[])) {
    const kept = !file.startsWith('.tmp-') && referenced.has(`sha256:${file}`);
    if (kept) continue;
    const st = await stat(join(dir, file)).catch(() => undefined);
    if (!st?.isFile() || now - st.mtimeMs < BLOB_SWEEP_GRACE_MS) continue;
    await rm(join(dir, file), { force: true });
    removed.push(file);
  }
  return removed;
}
