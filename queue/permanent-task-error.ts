import { ArchwayError } from '../src/core/index.ts';

/** A background task that no retry can help (a payload of the wrong shape, a record that is gone): it fails for good. */
export class PermanentTaskError extends ArchwayError {
  constructor(message: string) {
    super('TASK_PERMANENT', message);
  }
}
