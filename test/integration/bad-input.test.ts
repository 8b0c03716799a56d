import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImageNotFoundError, InvalidInputError, parseArch } from '../../src/core/index.ts';
import { createTestHost, leftovers, type TestHost } from '../support/test-host.ts';

let h: TestHost;
beforeAll(async () => {
  h = await createTestHost('amd64');
});
afterAll(async () => {
  await h.launcher.close();
});

const launch = (over: Record<string, unknown>) =>
  h.launcher.launch({ jobId: 'bad', image: 'busybox', argv: ['true'], ...over } as Parameters<
    TestHost['launcher']['launch']
  >[0]);

describe('bad input gets a clear error and creates nothing', () => {
  it('an unknown arch', () => {
    expect(() => parseArch('mips')).toThrow(InvalidInputError);
    expect(() => parseArch('mips')).toThrow(
      /unknown arch 'mips': expected one of amd64, arm64, ppc64le, s390x/,
    );
  });

  it.each([
    [
      'an unknown image',
      { image: 'nosuch' },
      ImageNotFoundError,
      // It lists what the host has for the arch (issue #10: a typo is seen at once).
      /no image 'nosuch' for amd64 on this host \(it has: (.+, )?busybox(, .+)?\).*images build nosuch/,
    ],
    [
      'an unknown digest',
      { image: `busybox@sha256:${'0'.repeat(64)}` },
      ImageNotFoundError,
      /no image busybox@sha256:0+ for amd64/,
    ],
    ['an image name with a slash', { image: '../etc' }, InvalidInputError, /image: invalid image/],
    ['an image name with ..', { image: 'busy..box' }, InvalidInputError, /may not contain "\.\."/],
    ['an image path', { image: 'images/busybox' }, InvalidInputError, /image: invalid image/],
    ['zero memory', { limits: { memoryMiB: 0 } }, InvalidInputError, /limits\.memoryMiB/],
    ['negative pids', { limits: { pids: -1 } }, InvalidInputError, /limits\.pids/],
    ['zero cpus', { limits: { cpus: 0 } }, InvalidInputError, /limits\.cpus/],
    ['a non-positive timeout', { timeoutSeconds: 0 }, InvalidInputError, /timeoutSeconds/],
    ['an empty command', { argv: [] }, InvalidInputError, /argv: a command is required/],
    ['a bad job id', { jobId: 'a/b' }, InvalidInputError, /jobId/],
    ['a bad env name', { env: { 'A-B': '1' } }, InvalidInputError, /env\.A-B/],
  ])('%s', async (_what, over, cls, message) => {
    await expect(launch(over)).rejects.toThrow(cls);
    await expect(launch(over)).rejects.toThrow(message);
    expect(await leftovers()).toEqual([]);
  });
});
