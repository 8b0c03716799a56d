import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, readdir, rm, rmdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { ImageBlob } from '../queue/index.ts';
import {
  AbortedError,
  BlobDigestMismatchError,
  deleteSubvolume,
  HostCommandError,
  isSubvolume,
  snapshotSubvolume,
} from '../src/core/index.ts';
import { spawnHostPipe } from './host-pipe.ts';

export interface VerifyAndReceiveOptions {
  /** The blob's bytes as they arrive (a download). */
  chunks: AsyncIterable<Uint8Array>;
  /** What the bytes must be: their sha256 and their count. */
  blob: ImageBlob;
  /** Directory the version goes to: the image's `images/<name>/<arch>`. */
  dir: string;
  /** Name of the subvolume in the stream (the version's digest): it lands at `<dir>/<name>`. */
  name: string;
  signal?: AbortSignal | undefined;
}

/** Staging directories are `.sync-<pid>-<random>`: the pid tells whose they are after a crash. */
export const STAGING_PREFIX = '.sync-';

/**
 * Streams a blob through `zstd -d | btrfs receive` into a staging directory beside the image's
 * versions, hashing the bytes as they pass. Only when every byte arrived, their sha256 is the
 * blob's digest, and receive succeeded, is the received (read-only) subvolume put at
 * `<dir>/<name>`. Anything else (a corrupt or truncated blob, a failed receive, an abort) deletes
 * the staging directory with whatever was half received in it, and throws.
 */
export async function verifyAndReceive(o: VerifyAndReceiveOptions): Promise<string> {
  await mkdir(o.dir, { recursive: true });
  const staging = join(o.dir, `${STAGING_PREFIX}${process.pid}-${randomBytes(5).toString('hex')}`);
  await mkdir(staging, { mode: 0o700 });
  const zstd = spawnHostPipe('zstd', ['-d', '-q', '-c'], { stdin: 'pipe', label: 'zstd -d' });
  if (!zstd.proc.stdout || !zstd.proc.stdin) throw new Error('zstd has no pipes');
  const receive = spawnHostPipe('btrfs', ['receive', staging], {
    stdin: zstd.proc.stdout,
    stdout: 'ignore',
    label: 'btrfs receive',
  });
  zstd.proc.stdout.destroy();
  const stdin = zstd.proc.stdin;
  const stop = () => {
    zstd.kill();
    receive.kill();
  };
  o.signal?.addEventListener('abort', stop, { once: true });
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    // A stage that exits early (bad data) ends the feeding; its exit code says why.
    const exited = Promise.race([zstd.done, receive.done]).then(
      () => 'exited' as const,
      () => 'exited' as const,
    );
    for await (const chunk of o.chunks) {
      if (o.signal?.aborted) throw new AbortedError('image sync', o.signal.reason);
      hash.update(chunk);
      bytes += chunk.length;
      if (bytes > o.blob.sizeBytes) break;
      if (stdin.destroyed) break;
      if (!stdin.write(chunk)) {
        // `once` rejects when the pipe errors (EPIPE: the stage died): that is an exit too.
        const drained = once(stdin, 'drain').then(
          () => 'drain' as const,
          () => 'exited' as const,
        );
        if ((await Promise.race([drained, exited])) === 'exited') break;
      }
    }
    stdin.end();
    const got = `sha256:${hash.digest('hex')}`;
    const results = await Promise.allSettled([zstd.done, receive.done]);
    if (o.signal?.aborted) throw new AbortedError('image sync', o.signal.reason);
    // The digest is checked first: it names the cause of a corrupt blob better than zstd or receive do.
    if (got !== o.blob.digest || bytes !== o.blob.sizeBytes)
      throw new BlobDigestMismatchError(o.blob.digest, got, bytes, o.blob.sizeBytes);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
    const received = join(staging, o.name);
    if (!(await isSubvolume(received)))
      throw new HostCommandError('btrfs receive', 0, `the stream held no subvolume named ${o.name}`);
    const final = join(o.dir, o.name);
    // A read-only subvolume cannot be renamed into another directory (EROFS: its `..` would
    // change), so it is put in place as a read-only snapshot, which is O(1) and keeps its received
    // UUID (the next incremental finds it as its parent). Another agent on the same pool may have
    // received it first: then theirs is kept.
    if (!(await isSubvolume(final))) await snapshotSubvolume(received, final, { readonly: true });
    await removeStaging(staging);
    return final;
  } catch (e) {
    stop();
    await Promise.allSettled([zstd.done, receive.done]);
    await removeStaging(staging);
    // Directories made for a version that never arrived go too (an image's first version).
    await rmdir(o.dir)
      .then(() => rmdir(dirname(o.dir)))
      .catch(() => undefined);
    throw e;
  } finally {
    o.signal?.removeEventListener('abort', stop);
  }
}

/** Deletes a staging directory and every subvolume (half received or not) in it. */
export async function removeStaging(staging: string): Promise<void> {
  for (const entry of await readdir(staging).catch(() => [] as string[])) {
    const path = join(staging, entry);
    if (await isSubvolume(path)) await deleteSubvolume(path);
  }
  await rm(staging, { recursive: true, force: true });
}
