import { ArchwayError } from './archway-error.ts';

/** The blob store holds no blob with this digest. */
export class BlobNotFoundError extends ArchwayError {
  readonly digest: string;
  constructor(digest: string) {
    super('BLOB_NOT_FOUND', `no blob ${digest} in the blob store`, { httpStatus: 404 });
    this.digest = digest;
  }
}
