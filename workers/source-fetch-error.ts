import { ArchwayError } from '../src/core/index.ts';

/**
 * A job's source could not be fetched into the host's mirror or placed in its container. Infra
 * (retried on another node) when the network or the host failed; not when the commit is not in
 * the repository or the image's build directory is unusable.
 */
export class SourceFetchError extends ArchwayError {
  constructor(message: string, opts: { infra: boolean; cause?: unknown }) {
    super('SOURCE_FETCH_FAILED', message, { httpStatus: 502, ...opts });
  }
}
