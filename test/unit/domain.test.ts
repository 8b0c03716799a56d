import { describe, expect, it } from 'vitest';
import { HostConfig, ImageRef, InvalidInputError, parseArch, parseConfig } from '../../src/core/index.ts';

describe('parseArch', () => {
  it.each([
    ['amd64', 'amd64'],
    ['x86_64', 'amd64'],
    ['x64', 'amd64'],
    ['aarch64', 'arm64'],
    ['ARM64', 'arm64'],
    ['ppc64el', 'ppc64le'],
    ['power', 'ppc64le'],
    ['s390x', 's390x'],
  ])('%s -> %s', (input, arch) => {
    expect(parseArch(input)).toBe(arch);
  });

  it.each(['i386', 'armhf', '', 'riscv64'])('refuses %j, naming the field', (input) => {
    expect(() => parseArch(input, 'jobs.arch')).toThrow(InvalidInputError);
    expect(() => parseArch(input, 'jobs.arch')).toThrow(/^jobs\.arch: unknown arch/);
  });
});

describe('ImageRef', () => {
  it('takes a name, or a name pinned to a digest', () => {
    expect(ImageRef.parse('busybox')).toEqual({ name: 'busybox' });
    const digest = `sha256:${'a'.repeat(64)}`;
    expect(ImageRef.parse(`debian-bookworm@${digest}`)).toEqual({ name: 'debian-bookworm', digest });
  });
  it.each(['', '/etc', '../x', 'a/b', 'x..y', 'Busybox', `busybox@sha256:${'a'.repeat(63)}`, 'a@b@c'])(
    'refuses %j',
    (s) => {
      expect(ImageRef.safeParse(s).success).toBe(false);
    },
  );
});

describe('config', () => {
  it('has a default for everything that is not a secret', () => {
    const c = parseConfig(HostConfig, {});
    expect(c.ARCHWAY_POOL_PATH).toBe('/var/lib/archway');
    expect(c.ARCHWAY_UID_BASE).toBe(100000);
    expect(c.ARCHWAY_UID_SIZE).toBe(65536);
  });
  it('names the variable at fault and what it expects', () => {
    expect(() => parseConfig(HostConfig, { ARCHWAY_UID_BASE: 'lots' })).toThrow(
      /^ARCHWAY_UID_BASE: invalid value "lots"/,
    );
    expect(() => parseConfig(HostConfig, { ARCHWAY_POOL_PATH: 'relative/path' })).toThrow(
      /ARCHWAY_POOL_PATH.*absolute path/,
    );
    expect(() => parseConfig(HostConfig, { ARCHWAY_OCI_RUNTIME: 'docker' })).toThrow(/ARCHWAY_OCI_RUNTIME/);
  });
  it('treats an empty variable as unset', () => {
    expect(parseConfig(HostConfig, { ARCHWAY_POOL_PATH: '' }).ARCHWAY_POOL_PATH).toBe('/var/lib/archway');
  });
});
