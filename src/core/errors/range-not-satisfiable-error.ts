import { ArchwayError } from './archway-error.ts';

/** A Range request that starts at or beyond the end of what it asks for (RFC 9110 15.5.17). */
export class RangeNotSatisfiableError extends ArchwayError {
  /** The blob's full size, which the 416 answer's Content-Range header gives. */
  readonly size: number;
  constructor(range: string, size: number) {
    super('RANGE_NOT_SATISFIABLE', `range '${range}' is not satisfiable: the blob has ${size} bytes`, {
      httpStatus: 416,
    });
    this.size = size;
  }
}
