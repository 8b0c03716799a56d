import { describe, expect, it } from 'vitest';
import { describeEnd, exitCodeOf, type JobEnd } from '../../src/cli/exit-codes.ts';
import { keyValues } from '../../src/cli/parse.ts';
import { parseSse, type SseEvent } from '../../src/cli/sse.ts';

async function events(chunks: string[]): Promise<SseEvent[]> {
  const body = (async function* () {
    const enc = new TextEncoder();
    for (const c of chunks) yield enc.encode(c);
  })();
  const out: SseEvent[] = [];
  for await (const ev of parseSse(body)) out.push(ev);
  return out;
}

describe('submit --follow exit codes', () => {
  it.each([
    [{ state: 'passed', exitCode: 0, reason: null }, 0],
    [{ state: 'failed', exitCode: 3, reason: null }, 3],
    [{ state: 'failed', exitCode: null, reason: null }, 1],
    [{ state: 'failed', exitCode: 137, reason: 'timeout' }, 124],
    [{ state: 'failed', exitCode: null, reason: 'silence' }, 124],
    [{ state: 'failed', exitCode: 137, reason: 'oom' }, 137],
    [{ state: 'canceled', exitCode: null, reason: 'canceled' }, 130],
    [{ state: 'errored', exitCode: null, reason: 'infra' }, 125],
    [{ state: 'errored', exitCode: null, reason: null }, 125],
    [{ state: 'failed', exitCode: null, reason: 'log_limit' }, 1],
  ] as const)('%j -> %i', (end, code) => {
    expect(exitCodeOf(end)).toBe(code);
  });

  // Issue #10: a timeout exited 124 but said "exit code 137" (the SIGKILL that ended it).
  it.each([
    [{ state: 'failed', exitCode: 137, reason: 'timeout' }, /timeout\); exit 124$/],
    [{ state: 'failed', exitCode: 3, reason: null }, /failed with exit code 3$/],
    [{ state: 'errored', exitCode: null, reason: 'infra' }, /host failed it \(infra\); exit 125$/],
    [{ state: 'passed', exitCode: 0, reason: null }, /passed; exit 0$/],
  ] as const)('the message of %j names the code it exits with', (end, line) => {
    const text = describeEnd('j1', end as JobEnd).trimEnd();
    expect(text).toMatch(line);
    expect(text).not.toMatch(/137/);
  });
});

describe('K=V options', () => {
  it('splits at the first =, keeping = and empty values', () => {
    expect(keyValues('--env', ['A=1', 'B=x=y', 'C='])).toEqual({ A: '1', B: 'x=y', C: '' });
  });
  it('names the option when a value has no key', () => {
    expect(() => keyValues('--label', ['=v'])).toThrow(/--label: expected KEY=VALUE, got '=v'/);
    expect(() => keyValues('--env', ['novalue'])).toThrow(/--env/);
  });
});

describe('server-sent events', () => {
  it('parses events split anywhere, with ids, names and comments', async () => {
    const stream =
      'id: 1-0\nevent: log\ndata: "a\\r"\n\n: keep-alive\n\nid: 2-0\nevent: log\ndata: "€"\n\nevent: end\ndata: {"state":"passed"}\n\n';
    const expected = [
      { id: '1-0', event: 'log', data: '"a\\r"' },
      { id: '2-0', event: 'log', data: '"€"' },
      { event: 'end', data: '{"state":"passed"}' },
    ];
    expect(await events([stream])).toEqual(expected);
    // Byte by byte, including inside the multi-byte €.
    const bytes = [...new TextEncoder().encode(stream)];
    const body = (async function* () {
      for (const b of bytes) yield new Uint8Array([b]);
    })();
    const out: SseEvent[] = [];
    for await (const ev of parseSse(body)) out.push(ev);
    expect(out).toEqual(expected);
  });

  it('accepts CRLF and CR line ends, and joins data lines', async () => {
    expect(await events(['event: x\r\ndata: a\r', '\ndata: b\r\r'])).toEqual([{ event: 'x', data: 'a\nb' }]);
  });
});
