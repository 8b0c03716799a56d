import { ArchwayError } from '../../src/core/index.ts';

/** Where in the config text something is: 1-based line and column. */
export interface SourcePosition {
  line: number;
  column: number;
}

/**
 * A repository config (`.archway.yml` / `.travis.yml`) that archway refuses: bad YAML, a value of
 * the wrong shape, an unknown arch, a condition that does not parse, a document too large.
 * A user's error: nothing was enqueued. The message quotes the problem and its line.
 */
export class ConfigError extends ArchwayError {
  /** The offending key, as a path (`jobs.include[2].arch`); empty for the document itself. */
  readonly keyPath: string;
  /** The problem alone, without the position or the key path. */
  readonly detail: string;
  readonly line: number | undefined;
  readonly column: number | undefined;
  /** The text of the offending line, when there is one. */
  readonly excerpt: string | undefined;

  constructor(
    detail: string,
    opts: { keyPath?: string; position?: SourcePosition | undefined; excerpt?: string | undefined } = {},
  ) {
    const where = opts.position ? `line ${opts.position.line}, column ${opts.position.column}: ` : '';
    const key = opts.keyPath ? `${opts.keyPath}: ` : '';
    super('CONFIG_INVALID', `${where}${key}${detail}`, { httpStatus: 400 });
    this.keyPath = opts.keyPath ?? '';
    this.detail = detail;
    this.line = opts.position?.line;
    this.column = opts.position?.column;
    this.excerpt = opts.excerpt;
  }
}
