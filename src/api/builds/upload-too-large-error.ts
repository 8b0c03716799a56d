import { ArchwayError } from '../../core/index.ts';

/** An upload over ARCHWAY_UPLOAD_LIMIT_BYTES: 413. */
export class UploadTooLargeError extends ArchwayError {
  constructor(limit: number) {
    super(
      'UPLOAD_TOO_LARGE',
      `the upload is larger than ${limit} bytes (ARCHWAY_UPLOAD_LIMIT_BYTES): leave build outputs out (.gitignore) or ask the operator`,
      { httpStatus: 413 },
    );
  }
}
