import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
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
