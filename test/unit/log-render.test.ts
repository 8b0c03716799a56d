import { describe, expect, it } from 'vitest';
import { createLogRenderer, logColor } from '../../src/cli/log-render.ts';

const LOG = [
  'travis_fold:start:apt',
  'travis_time:start:00000001',
  '\x1b[33;1m$ sudo apt-get install zlib1g-dev\x1b[0m',
  'Setting up zlib1g-dev',
  'travis_time:end:00000001:start=1,finish=9125751254,duration=9125751253',
  'travis_fold:end:apt',
  '\x1b[32;1mThe command "make test" exited with 0.\x1b[0m',
  '',
].join('\n');

/** The renderer fed `text` in chunks of `size` characters. */
function render(text: string, size: number, color: boolean): string {
  const r = createLogRenderer({ color });
  let shown = '';
  for (let i = 0; i < text.length; i += size) shown += r.push(text.slice(i, i + size));
  return shown + r.end();
}

describe('the log on a terminal', () => {
  it('drops the fold and timing markers and keeps every other line, in order', () => {
    expect(render(LOG, LOG.length, true)).toBe(
      '\x1b[33;1m$ sudo apt-get install zlib1g-dev\x1b[0m\nSetting up zlib1g-dev\n\x1b[32;1mThe command "make test" exited with 0.\x1b[0m\n',
    );
  });

  it('drops colour codes when the output is not a terminal', () => {
    expect(render(LOG, LOG.length, false)).toBe(
      '$ sudo apt-get install zlib1g-dev\nSetting up zlib1g-dev\nThe command "make test" exited with 0.\n',
    );
  });

  it('gives the same text whatever the chunks are, down to one character at a time', () => {
    const whole = render(LOG, LOG.length, false);
    for (const size of [1, 2, 3, 7, 16]) expect(render(LOG, size, false)).toBe(whole);
    const coloured = render(LOG, LOG.length, true);
    for (const size of [1, 5, 13]) expect(render(LOG, size, true)).toBe(coloured);
  });

  it('writes a partial line at once (a prompt), and keeps travis_ in the middle of a line', () => {
    const r = createLogRenderer({ color: false });
    expect(r.push('Password: ')).toBe('Password: ');
    expect(r.push('travis_fold:start:x\n')).toBe('travis_fold:start:x\n');
    expect(r.push('echo travis_time:start is just text\n')).toBe('echo travis_time:start is just text\n');
    expect(r.push('trav')).toBe('');
    expect(r.push('el\n')).toBe('travel\n');
    expect(r.end()).toBe('');
  });

  it('keeps a last line without a newline, and drops a last marker without one', () => {
    const a = createLogRenderer({ color: false });
    expect(a.push('done') + a.end()).toBe('done');
    const b = createLogRenderer({ color: false });
    expect(b.push('x\ntravis_fold:end:script') + b.end()).toBe('x\n');
  });

  it('--raw prints the log as it is stored', () => {
    expect(render(LOG, 5, false)).not.toBe(LOG);
    const r = createLogRenderer({ color: false, raw: true });
    expect(r.push(LOG) + r.end()).toBe(LOG);
  });

  it('colours go to a terminal unless NO_COLOR; FORCE_COLOR forces them', () => {
    expect(logColor({ isTTY: true }, {})).toBe(true);
    expect(logColor({ isTTY: false }, {})).toBe(false);
    expect(logColor({ isTTY: true }, { NO_COLOR: '1' })).toBe(false);
    expect(logColor({ isTTY: false }, { FORCE_COLOR: '1' })).toBe(true);
  });
});
