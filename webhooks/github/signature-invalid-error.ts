import { ArchwayError } from '../../src/core/index.ts';

/** A webhook delivery whose `X-Hub-Signature-256` is missing or matches no configured secret: 401, nothing written. */
export class SignatureInvalidError extends ArchwayError {
  constructor(message: string) {
    super('SIGNATURE_INVALID', message, { httpStatus: 401 });
  }
}
