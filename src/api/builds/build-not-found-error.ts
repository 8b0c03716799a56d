import { ArchwayError } from '../../core/index.ts';

/** No build of that id (or not one of the API's): 404. */
export class BuildNotFoundError extends ArchwayError {
  constructor(id: string) {
    super('BUILD_NOT_FOUND', `no build ${id}`, { httpStatus: 404 });
  }
}
