import { ArchwayError } from './archway-error.ts';

/** No such image (or no such version of it) for that arch on this host. */
export class ImageNotFoundError extends ArchwayError {
  constructor(message: string) {
    super('IMAGE_NOT_FOUND', message, { httpStatus: 404 });
  }
}
