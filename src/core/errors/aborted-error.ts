import { ArchwayError } from './archway-error.ts';

/** The caller's AbortSignal fired or its deadline passed; whatever was half made has been removed. */
export class AbortedError extends ArchwayError {
  constructor(what: string, reason?: unknown) {
    super('ABORTED', `${what} aborted${reason instanceof Error ? `: ${reason.message}` : ''}`, {
      httpStatus: 499,
    });
  }
}
