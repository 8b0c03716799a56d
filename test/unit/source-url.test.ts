import { describe, expect, it } from 'vitest';
import { checkSourceUrl, InvalidInputError, parseSourceUrl, sourceBuildDir } from '../../src/index.ts';
import { conclusionOf } from '../../webhooks/index.ts';

describe('source URLs', () => {
  it('takes remote https and git URLs, and names the mirror and build directory', () => {
    const s = parseSourceUrl('https://github.com/Acme/Widget.git');
    expect(s.host).toBe('github.com');
    expect(s.path).toBe('Acme/Widget');
    expect(sourceBuildDir(s.path)).toBe('/root/build/Acme/Widget');
    expect(parseSourceUrl('git://example.org/a/b').path).toBe('a/b');
  });

  it.each([
    ['file:///etc/passwd', /scheme 'file'/],
    ['/srv/repo.git', /not a URL/],
    ['ssh://git@github.com/a/b.git', /scheme 'ssh'/],
    ['http://github.com/a/b.git', /scheme 'http'/],
    ['https://user:secret@github.com/a/b.git', /credentials/],
    ['https://127.0.0.1/a/b.git', /loopback/],
    ['https://localhost/a/b.git', /loopback/],
    ['https://[::1]/a/b.git', /loopback/],
    ['https://github.com/', /repository path/],
    ['https://github.com/a%2F..%2Fb.git', /repository path/],
  ])('refuses %s', (url, why) => {
    let err: unknown;
    try {
      parseSourceUrl(url);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidInputError);
    expect((err as InvalidInputError).field).toBe('source.git');
    expect((err as Error).message).toMatch(why);
  });

  it('takes loopback (and plain http to it) only when allowed, for tests', async () => {
    expect(parseSourceUrl('http://127.0.0.1:8080/a/b.git', { allowLoopback: true }).host).toBe(
      '127.0.0.1:8080',
    );
    await expect(checkSourceUrl('https://localhost/a/b.git')).rejects.toThrow(/loopback/);
  });
});

describe('check run conclusions', () => {
  const spec = { timeoutSeconds: 60, silenceTimeoutSeconds: 10 } as never;
  it.each([
    [{ state: 'passed' }, false, 'success'],
    [{ state: 'failed', exitCode: 1 }, false, 'failure'],
    [{ state: 'failed', exitCode: 2 }, false, 'failure'],
    [{ state: 'failed', reason: 'timeout', exitCode: 137 }, false, 'timed_out'],
    [{ state: 'errored', reason: 'infra' }, false, 'failure'],
    [{ state: 'canceled', reason: 'canceled' }, false, 'cancelled'],
    [{ state: 'canceled', reason: 'superseded' }, false, 'cancelled'],
    [{ state: 'failed', exitCode: 1 }, true, 'neutral'],
  ] as const)('%o (allowed to fail: %s) -> %s', (job, allow, conclusion) => {
    expect(conclusionOf({ spec, ...job } as never, allow).conclusion).toBe(conclusion);
  });

  it('says that exit code 2 is an install phase that failed', () => {
    expect(conclusionOf({ spec, state: 'failed', exitCode: 2 } as never, false).note).toMatch(/install/);
  });
});
