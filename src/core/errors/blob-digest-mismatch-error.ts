import { ArchwayError } from './archway-error.ts';

/**
 * The bytes received for a blob do not hash to its digest, or are not as many as the catalog
 * says (a corrupt or truncated blob). Nothing of it was kept. Infra: another try may succeed.
 */
export class BlobDigestMismatchError extends ArchwayError {
  constructor(expected: string, got: string, bytes: number, expectedBytes: number) {
    super(
      'BLOB_DIGEST_MISMATCH',
      `blob ${expected}: received ${bytes} bytes (expected ${expectedBytes}) hashing to ${got}; rejected`,
      { httpStatus: 502, infra: true },
    );
  }
}
