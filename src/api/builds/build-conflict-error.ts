import { ArchwayError } from '../../core/index.ts';

/** A request that the build's or the job's state does not allow (a restart of a running job, ...): 409. */
export class BuildConflictError extends ArchwayError {
  constructor(message: string) {
    super('BUILD_CONFLICT', message, { httpStatus: 409 });
  }
}
