import { ArchwayError } from './archway-error.ts';

/** The host lacks something the runtime needs; `fix` says how to get it. */
export class HostRequirementError extends ArchwayError {
  readonly fix: string;
  constructor(message: string, fix: string) {
    super('HOST_REQUIREMENT_MISSING', `${message}; fix: ${fix}`, { httpStatus: 503, infra: true });
    this.fix = fix;
  }
}
