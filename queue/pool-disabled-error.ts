import { type Arch, ArchwayError } from '../src/core/index.ts';

/** A job for an arch whose pool an operator has disabled (max 0): no node would ever run it. */
export class PoolDisabledError extends ArchwayError {
  readonly arch: Arch;
  constructor(arch: Arch) {
    super(
      'POOL_DISABLED',
      `the ${arch} pool is disabled (max 0 nodes): no node would run this job; an operator enables it with \`archway pools set ${arch} --max N\``,
      { httpStatus: 409 },
    );
    this.arch = arch;
  }
}
