/** Base of every error archway raises on purpose: a stable `code` to branch on, and an HTTP status where one applies. */
export class ArchwayError extends Error {
  readonly code: string;
  readonly httpStatus: number;
  /** True when the failure is the host's or the runtime's (retry elsewhere), false when it is the user's. */
  readonly infra: boolean;

  constructor(
    code: string,
    message: string,
    opts: { httpStatus?: number; infra?: boolean; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = code;
    this.httpStatus = opts.httpStatus ?? 500;
    this.infra = opts.infra ?? false;
  }
}
