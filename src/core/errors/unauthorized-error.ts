import { ArchwayError } from './archway-error.ts';

/** No credentials, or credentials that match nothing (a bearer token, a webhook signature). */
export class UnauthorizedError extends ArchwayError {
  constructor(message: string) {
    super('UNAUTHORIZED', message, { httpStatus: 401 });
  }
}
