import { ArchwayError } from './archway-error.ts';

/** Bad input from a user: names the field at fault. Nothing was changed. */
export class InvalidInputError extends ArchwayError {
  readonly field: string;
  constructor(field: string, message: string) {
    super('INVALID_INPUT', `${field}: ${message}`, { httpStatus: 400 });
    this.field = field;
  }
}
