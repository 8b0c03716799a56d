import { ArchwayError } from './archway-error.ts';

/** A blob could not be downloaded from the API (unreachable, an error answer, a stalled transfer). */
export class BlobDownloadError extends ArchwayError {
  constructor(message: string, cause?: unknown) {
    super('BLOB_DOWNLOAD_FAILED', message, { httpStatus: 502, infra: true, cause });
  }
}
