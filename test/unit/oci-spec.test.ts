import { describe, expect, it } from 'vitest';
import { createOciSpec, createProcessSpec } from '../../workers/oci-spec.ts';

const spec = createOciSpec({
  rootfs: '/pool/warm/aw-x',
  hostname: 'job-1',
  idBase: 100000,
  idSize: 65536,
  limits: { cpus: 1.5, memoryMiB: 512, pids: 100, diskMiB: 1024 },
  cgroupsPath: '/archway/aw-x',
  initPath: '/usr/bin/catatonit',
  seccomp: undefined,
});

describe('the OCI spec', () => {
  it('puts the container in its own user, pid, mount, uts, ipc, net and cgroup namespaces', () => {
    expect(spec.linux.namespaces.map((n) => n.type).sort()).toEqual([
      'cgroup',
      'ipc',
      'mount',
      'network',
      'pid',
      'user',
      'uts',
    ]);
    expect(spec.linux.uidMappings).toEqual([{ containerID: 0, hostID: 100000, size: 65536 }]);
    expect(spec.linux.gidMappings).toEqual([{ containerID: 0, hostID: 100000, size: 65536 }]);
    expect(spec.hostname).toBe('job-1');
  });
  it('limits memory (swap included), pids and cpu', () => {
    expect(spec.linux.resources.memory).toEqual({ limit: 512 * 2 ** 20, swap: 512 * 2 ** 20 });
    expect(spec.linux.resources.pids).toEqual({ limit: 100 });
    expect(spec.linux.resources.cpu).toEqual({ quota: 150_000, period: 100_000 });
  });
  it('mounts /sys read-only and the host init read-only', () => {
    expect(spec.mounts.find((m) => m.destination === '/sys')?.options).toContain('ro');
    expect(spec.mounts.find((m) => m.destination === '/.archway/init')).toMatchObject({
      source: '/usr/bin/catatonit',
      options: expect.arrayContaining(['ro']),
    });
  });
  it('sets noNewPrivileges on the container and on the exec, and carries the seccomp filter', () => {
    expect(spec.process.noNewPrivileges).toBe(true);
    expect(createProcessSpec({ argv: ['true'], env: {}, cwd: '/' }).noNewPrivileges).toBe(true);
    expect('seccomp' in spec.linux).toBe(false);
    const seccomp = { defaultAction: 'SCMP_ACT_ERRNO' as const, architectures: [], syscalls: [] };
    const filtered = createOciSpec({
      rootfs: '/r',
      hostname: 'h',
      idBase: 1,
      idSize: 1,
      limits: { cpus: 1, memoryMiB: 1, pids: 1, diskMiB: 1 },
      cgroupsPath: '/c',
      initPath: '/i',
      seccomp,
    });
    expect(filtered.linux).toMatchObject({ seccomp });
  });
  it('keeps the job environment in the process file, after the defaults', () => {
    const p = createProcessSpec({ argv: ['make'], env: { SECRET: 's3', PATH: '/opt/bin' }, cwd: '/src' });
    expect(p.env).toContain('SECRET=s3');
    expect(p.env).toContain('PATH=/opt/bin');
    expect(p.env.filter((e) => e.startsWith('PATH='))).toHaveLength(1);
    expect(p.cwd).toBe('/src');
  });
});
