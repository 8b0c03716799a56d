import { describe, expect, it } from 'vitest';
import {
  allowEntryError,
  checkSourceUrl,
  InvalidInputError,
  parseSourceUrl,
  sourceBuildDir,
} from '../../src/core/index.ts';
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
    // Every spelling of the host's own and private addresses (issue 9, point 5).
    ['git://[::ffff:127.0.0.1]:9418/a/b.git', /loopback/],
    ['https://[::ffff:127.0.0.1]:8443/a/b.git', /loopback/],
    ['https://2130706433/a/b.git', /loopback/],
    ['https://0x7f000001/a/b.git', /loopback/],
    ['https://0177.0.0.1/a/b.git', /loopback/],
    ['https://127.1/a/b.git', /loopback/],
    ['https://0.0.0.0/a/b.git', /unspecified/],
    ['https://[::]/a/b.git', /unspecified/],
    ['https://169.254.169.254/a/b.git', /link-local/],
    ['https://10.1.2.3/a/b.git', /private/],
    ['https://172.16.0.1/a/b.git', /private/],
    ['https://172.31.255.254/a/b.git', /private/],
    ['https://192.168.0.10/a/b.git', /private/],
    ['https://100.64.0.1/a/b.git', /carrier-grade NAT/],
    ['https://[fc00::1]/a/b.git', /private/],
    ['https://[fd00::1]/a/b.git', /private/],
    ['https://[fe80::1]/a/b.git', /link-local/],
    ['https://224.0.0.251/a/b.git', /multicast/],
    ['https://[ff02::1]/a/b.git', /multicast/],
    ['https://[::ffff:10.0.0.1]/a/b.git', /private/],
    ['https://[64:ff9b::a9fe:a9fe]/a/b.git', /link-local/],
    ['https://[2002:c0a8:1::]/a/b.git', /private/],
    ['https://255.255.255.255/a/b.git', /reserved/],
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

describe('source URLs: addresses', () => {
  it('takes public addresses, and private ones only from the operator allow-list', () => {
    expect(parseSourceUrl('https://140.82.112.3/a/b.git').host).toBe('140.82.112.3');
    expect(parseSourceUrl('https://[2606:4700::1111]/a/b.git').path).toBe('a/b');
    expect(parseSourceUrl('https://172.32.0.1/a/b.git').host).toBe('172.32.0.1');
    expect(parseSourceUrl('https://10.20.1.2/a/b.git', { allow: ['10.20.0.0/16'] }).host).toBe('10.20.1.2');
    expect(() => parseSourceUrl('https://10.21.1.2/a/b.git', { allow: ['10.20.0.0/16'] })).toThrow(
      /private address.*ARCHWAY_SOURCE_ALLOW/,
    );
    // The host itself is never the allow-list's to open.
    expect(() => parseSourceUrl('https://127.0.0.1/a/b.git', { allow: ['127.0.0.0/8'] })).toThrow(/loopback/);
  });

  it('checks every address a name resolves to, and allows names on the list', async () => {
    const resolver = async () => [{ address: '140.82.112.3' }, { address: '::ffff:a9fe:a9fe' }];
    await expect(
      checkSourceUrl('https://git.example.org/a/b.git', {}, 'source.git', resolver),
    ).rejects.toThrow(/git\.example\.org' resolves to ::ffff:a9fe:a9fe, a link-local address/);
    const ok = await checkSourceUrl(
      'https://git.corp.example/a/b.git',
      { allow: ['*.corp.example'] },
      'source.git',
      async () => [{ address: '10.0.0.5' }],
    );
    expect(ok.addresses).toEqual(['10.0.0.5']);
  });

  it('names what is wrong with an allow-list entry', () => {
    expect(allowEntryError('10.0.0.0/8')).toBeUndefined();
    expect(allowEntryError('fd00::/8')).toBeUndefined();
    expect(allowEntryError('git.corp.example')).toBeUndefined();
    expect(allowEntryError('10.0.0.0/33')).toMatch(/too long/);
    expect(allowEntryError('git corp')).toMatch(/neither a CIDR/);
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
