import { type BuildEvent, type ExpandOptions, type ExpandResult, expandMatrix } from './expand-matrix.ts';
import { type ParseConfigOptions, parseConfig } from './parse-config.ts';

/** Reads a config and expands it for one event (parseConfig, then expandMatrix). Throws ConfigError. */
export function expandRepoConfig(
  text: string,
  event: BuildEvent,
  opts: ExpandOptions & ParseConfigOptions = {},
): ExpandResult {
  return expandMatrix(parseConfig(text, opts), event, opts);
}
