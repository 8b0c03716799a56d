import type { ConfigError } from './config-error.ts';

/**
 * A config error as people read it, the one text of both `archway config expand` (after
 * `archway: `) and the API's 400 (after `config: `): the file's name when there is one, the
 * message (line, column, key, problem), then the offending line and a caret under the column.
 */
export function configErrorText(e: ConfigError, file?: string): string {
  let text = `${file !== undefined ? `${file}: ` : ''}${e.message}`;
  if (e.excerpt !== undefined && e.line !== undefined) {
    const gutter = `${e.line} | `;
    text += `\n${gutter}${e.excerpt}\n${' '.repeat(gutter.length + (e.column ?? 1) - 1)}^`;
  }
  return text;
}
