import { describe, expect, it } from 'vitest';
import { createOciSpec } from '../../workers/oci-spec.ts';
import { idRangeLayoutProblem, idRangeOf, ucountSysctls } from '../../workers/user-namespace.ts';

describe('uid ranges', () => {
  it('puts range k at base + k * size, range 0 at the base', () => {
    const layout = { base: 100000, size: 65536, count: 64 };
    expect(idRangeOf(layout, 0)).toEqual({ index: 0, shift: 0, hostId: 100000 });
    expect(idRangeOf(layout, 3)).toEqual({ index: 3, shift: 196608, hostId: 296608 });
  });

  it('refuses a layout whose last id is not a valid kernel uid', () => {
    expect(idRangeLayoutProblem({ base: 100000, size: 65536, count: 64 })).toBeUndefined();
    // 65535 ranges of 65536 from 65536 end at 2^32 - 1 exactly: (uid_t)-1 is not an id.
    expect(idRangeLayoutProblem({ base: 65536, size: 65536, count: 65535 })).toMatch(/past the largest uid/);
    expect(idRangeLayoutProblem({ base: 65536, size: 65536, count: 65534 })).toBeUndefined();
  });

  it('sets every per-user-namespace count archway bounds', () => {
    const s = ucountSysctls({
      inotifyInstances: 128,
      inotifyWatches: 8192,
      fanotifyGroups: 16,
      fanotifyMarks: 8192,
      namespaces: 64,
    });
    expect(s).toContain('user.max_inotify_instances=128');
    expect(s).toContain('user.max_inotify_watches=8192');
    expect(s).toContain('user.max_fanotify_groups=16');
    expect(s).toContain('user.max_fanotify_marks=8192');
    for (const k of ['cgroup', 'ipc', 'mnt', 'net', 'pid', 'time', 'user', 'uts'])
      expect(s).toContain(`user.max_${k}_namespaces=64`);
  });

  it("joins the container's own user namespace when one is given, with its range's mapping", () => {
    const spec = createOciSpec({
      rootfs: '/pool/jobs/aw-x',
      hostname: 'x',
      idBase: 296608,
      idSize: 65536,
      limits: { cpus: 1, memoryMiB: 256, pids: 64, diskMiB: 1024 },
      cgroupsPath: '/archway/aw-x',
      initPath: '/usr/bin/catatonit',
      seccomp: undefined,
      userNamespace: '/proc/123/ns/user',
    });
    expect(spec.linux.namespaces).toContainEqual({ type: 'user', path: '/proc/123/ns/user' });
    expect(spec.linux.uidMappings).toEqual([{ containerID: 0, hostID: 296608, size: 65536 }]);
    expect(spec.linux.gidMappings).toEqual([{ containerID: 0, hostID: 296608, size: 65536 }]);
  });
});
