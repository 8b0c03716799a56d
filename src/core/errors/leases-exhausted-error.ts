import { ArchwayError } from './archway-error.ts';

/** Every lease of a host-wide resource (uid ranges, address blocks) is held by a live container. */
export class LeasesExhaustedError extends ArchwayError {
  constructor(what: string, size: number) {
    super('LEASES_EXHAUSTED', `all ${size} ${what} of this host are held by live containers`, {
      httpStatus: 503,
      infra: true,
    });
  }
}
