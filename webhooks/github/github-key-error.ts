import { ArchwayError } from '../../src/core/index.ts';

/** ARCHWAY_GITHUB_PRIVATE_KEY is neither PEM text nor a readable PEM file: the API does not start. */
export class GitHubKeyError extends ArchwayError {
  constructor(message: string) {
    super('GITHUB_PRIVATE_KEY_INVALID', `ARCHWAY_GITHUB_PRIVATE_KEY: ${message}`, { httpStatus: 500 });
  }
}
