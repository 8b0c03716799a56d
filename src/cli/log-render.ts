/**
 * A job's log as a terminal shows it (`logs`, `submit --follow`, `build`): the lines the job
 * wrote, without the `travis_fold:` and `travis_time:` marker lines that the log page turns into
 * folds and timings (a terminal has neither), and without colour codes when the output is not a
 * terminal (or NO_COLOR is set). `--raw` prints the log as it is stored. Pure and streaming: a
 * marker or an escape sequence split across chunks is held until it is whole; any other partial
 * line is written at once, so a prompt without a newline still shows live.
 */
export interface LogRenderer {
  /** What to write for the next chunk of the log. */
  push(chunk: string): string;
  /** What is left at the end of the log. */
  end(): string;
}

const MARKER = 'travis_';
// biome-ignore-start lint/suspicious/noControlCharactersInRegex: ESC and CR are what these match
/** Travis's markers, alone on their line, possibly after a carriage return and an erase-line code. */
const MARKER_LINE = /^(?:\r|\x1b\[0?K)*travis_(?:fold|time):[^\n]*$/;
/** Any CSI sequence (colours, erase-line): what a file or a pipe should not get. */
const CSI = /\x1b\[[0-9;?]*[ -/]*[@-~]/g;
/** An escape sequence cut at the end of a chunk. */
const CUT_ESCAPE = /\x1b(?:\[[0-9;?]*[ -/]*)?$/;
/** A line's leading carriage returns and erase-line codes (Travis put them before its markers). */
const LEADING_ERASE = /^(?:\r|\x1b\[0?K)*/;
// biome-ignore-end lint/suspicious/noControlCharactersInRegex: ESC and CR are what these match

export function createLogRenderer(o: { color: boolean; raw?: boolean }): LogRenderer {
  if (o.raw) return { push: (c) => c, end: () => '' };
  let held = '';
  // Whether `held` (and the next text) starts a line: only there can a marker begin.
  let atLineStart = true;
  const paint = (s: string) => (o.color ? s : s.replace(CSI, ''));
  /** Whether `s`, at a line's start, may still become a marker line. */
  const mayBeMarker = (s: string) => {
    const bare = s.replace(LEADING_ERASE, '');
    return bare.length < MARKER.length ? MARKER.startsWith(bare) : bare.startsWith(MARKER);
  };
  return {
    push(chunk) {
      let text = held + chunk;
      held = '';
      let shown = '';
      for (;;) {
        const nl = text.indexOf('\n');
        if (nl < 0) break;
        const line = text.slice(0, nl);
        text = text.slice(nl + 1);
        if (!(atLineStart && MARKER_LINE.test(line.replace(/\r$/, '')))) shown += paint(`${line}\n`);
        atLineStart = true;
      }
      // The part of a line that has no newline yet.
      if (text && atLineStart && mayBeMarker(text)) {
        held = text;
      } else if (text) {
        const cut = o.color ? null : CUT_ESCAPE.exec(text);
        const now = cut ? text.slice(0, cut.index) : text;
        held = cut ? text.slice(cut.index) : '';
        shown += paint(now);
        if (now) atLineStart = false;
      }
      return shown;
    },
    end() {
      const rest = held;
      held = '';
      if (!rest || (atLineStart && MARKER_LINE.test(rest))) return '';
      return paint(rest);
    },
  };
}

/** The --help lines of the variables `logColor` reads. */
export const LOG_ENV_HELP = `
  NO_COLOR       no colour codes in the job's log, even on a terminal
  FORCE_COLOR    colour codes in the job's log, even when not on a terminal`;

/** Whether the job's colours go to `stream`: a terminal, unless NO_COLOR is set (FORCE_COLOR forces them). */
export function logColor(stream: { isTTY?: boolean }, env: Record<string, string | undefined>): boolean {
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== '0') return true;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  return stream.isTTY === true;
}
