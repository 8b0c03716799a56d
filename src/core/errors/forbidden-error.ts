import { ArchwayError } from './archway-error.ts';

/** Valid credentials that do not allow this action (a token without the scope it needs). */
export class ForbiddenError extends ArchwayError {
  constructor(message: string) {
    super('FORBIDDEN', message, { httpStatus: 403 });
  }
}
