import type { ImageBlob } from '../queue/index.ts';
import { AbortedError, BlobDownloadError, toError } from '../src/core/index.ts';

export interface DownloadBlobOptions {
  /** The API's base URL, e.g. http://api.internal:8080. */
  apiUrl: string;
  /** Bearer token with the read scope. */
  token?: string | undefined;
  blob: ImageBlob;
  signal?: AbortSignal | undefined;
  /** A transfer that receives nothing for this long is cut and resumed. Default 30 s. */
  idleTimeoutMs?: number;
  /** Times a cut transfer is resumed (with a Range request from where it stopped). Default 3. */
  resumes?: number;
  /** Injectable for tests. Default: the global fetch. */
  fetch?: typeof fetch;
}

/** The URL of a blob on the API. */
export function blobUrl(apiUrl: string, digest: string): string {
  return `${apiUrl.replace(/\/+$/, '')}/v1/images/blobs/${digest}`;
}

/**
 * The blob's bytes from `GET /v1/images/blobs/sha256:...`, as they arrive. A transfer cut
 * half-way (or silent for `idleTimeoutMs`) is resumed with `Range: bytes=<received>-`, so the
 * consumer sees one unbroken sequence of bytes; it still checks their digest.
 */
export async function* downloadBlob(o: DownloadBlobOptions): AsyncGenerator<Uint8Array> {
  const doFetch = o.fetch ?? fetch;
  const url = blobUrl(o.apiUrl, o.blob.digest);
  const idleMs = o.idleTimeoutMs ?? 30_000;
  let offset = 0;
  let resumes = 0;
  for (;;) {
    if (o.signal?.aborted) throw new AbortedError('blob download', o.signal.reason);
    // Cut right after the last byte: nothing left to ask for.
    if (offset > 0 && offset >= o.blob.sizeBytes) return;
    const idle = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => idle.abort(new Error(`no data for ${idleMs} ms`)), idleMs);
    };
    const signal = o.signal ? AbortSignal.any([o.signal, idle.signal]) : idle.signal;
    try {
      arm();
      let res: Response;
      try {
        res = await doFetch(url, {
          headers: {
            ...(o.token ? { authorization: `Bearer ${o.token}` } : {}),
            ...(offset > 0 ? { range: `bytes=${offset}-` } : {}),
          },
          signal,
        });
      } catch (e) {
        throw new BlobDownloadError(`GET ${url}: ${causeOf(e)}`, e);
      }
      if (!res.ok) {
        const body = await res.text().catch(() => '');
        const message = errorMessage(body) ?? `the API answered ${res.status}`;
        // An answer (not a cut transfer) is final: resuming would get the same one.
        resumes = Number.POSITIVE_INFINITY;
        throw new BlobDownloadError(`GET ${url}: ${res.status}: ${message}`);
      }
      if (offset > 0 && res.status !== 206) {
        resumes = Number.POSITIVE_INFINITY;
        throw new BlobDownloadError(`GET ${url}: the API ignored the Range request to resume at ${offset}`);
      }
      if (!res.body) throw new BlobDownloadError(`GET ${url}: an empty answer`);
      try {
        for await (const chunk of res.body) {
          arm();
          offset += chunk.length;
          yield chunk;
        }
      } catch (e) {
        throw new BlobDownloadError(`GET ${url}: cut after ${offset} bytes: ${causeOf(e)}`, e);
      }
      return;
    } catch (e) {
      if (o.signal?.aborted) throw new AbortedError('blob download', o.signal.reason);
      resumes++;
      if (resumes > (o.resumes ?? 3)) throw e;
      await new Promise((r) => setTimeout(r, 500 * resumes));
    } finally {
      clearTimeout(timer);
    }
  }
}

function causeOf(e: unknown): string {
  const err = toError(e);
  const cause = err.cause instanceof Error ? err.cause : undefined;
  return (cause && 'code' in cause && String(cause.code)) || cause?.message || err.message;
}

function errorMessage(body: string): string | undefined {
  try {
    return (JSON.parse(body) as { error?: { message?: string } }).error?.message;
  } catch {
    return undefined;
  }
}
