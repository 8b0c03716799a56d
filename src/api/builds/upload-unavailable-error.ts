import { ArchwayError } from '../../core/index.ts';

/** An upload another API replica holds, which this one could not fetch from it: 503, try again. */
export class UploadUnavailableError extends ArchwayError {
  constructor(id: string, holder: string, why: string) {
    super(
      'UPLOAD_UNAVAILABLE',
      `upload ${id} is held by the API replica at ${holder} (ARCHWAY_REPLICA_URL), which could not be reached: ${why}`,
      { httpStatus: 503 },
    );
  }
}
