import type { Limits } from '../src/core/index.ts';
import type { OciSeccomp } from './seccomp-profile.ts';

export interface OciSpecOptions {
  /** The container's writable root: a snapshot of the image. */
  rootfs: string;
  hostname: string;
  /** First host uid/gid that container root maps to, and how many follow it. */
  idBase: number;
  idSize: number;
  limits: Limits;
  /** cgroup path relative to the hierarchy root, e.g. /archway/aw-123. */
  cgroupsPath: string;
  /** Host path of the static init bind-mounted into the container at /.archway/init. */
  initPath: string;
  /** The container's seccomp filter (seccomp-profile.ts); undefined only in the launch benchmark's baseline. */
  seccomp: OciSeccomp | undefined;
  /** A user namespace to join (already mapped as idBase/idSize say) instead of runc making one. */
  userNamespace?: string;
}

/** In-container path of the host's static init. */
export const INIT_IN_CONTAINER = '/.archway/init';

/**
 * Docker's default capability set: what package managers and build tools expect of root. They
 * are namespaced: they give power over the container's own user namespace, not the host.
 */
export const CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

export const CPU_PERIOD_US = 100_000;

/** The cgroup resources of `limits`, in the OCI shape `runc update -r` takes as well. */
export function ociResources(limits: Limits) {
  const bytes = limits.memoryMiB * 1024 * 1024;
  return {
    // swap = memory: the limit holds for memory plus swap, so a job cannot page its way past it.
    memory: { limit: bytes, swap: bytes },
    pids: { limit: limits.pids },
    cpu: { quota: Math.round(limits.cpus * CPU_PERIOD_US), period: CPU_PERIOD_US },
  };
}

/** The OCI runtime spec (config.json) of one container: unprivileged, isolated, limited. */
export function createOciSpec(o: OciSpecOptions) {
  const caps = CAPABILITIES;
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      // -P: pause mode; the container idles in the init until a job is exec'd into it.
      args: [INIT_IN_CONTAINER, '-P'],
      env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      cwd: '/',
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      // No setuid or file-capability gain past this point; it also lets runc load the filter last.
      noNewPrivileges: true,
    },
    root: { path: o.rootfs, readonly: false },
    hostname: o.hostname,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      {
        destination: '/dev',
        type: 'tmpfs',
        source: 'tmpfs',
        options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
      },
      {
        destination: '/dev/pts',
        type: 'devpts',
        source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'],
      },
      {
        destination: '/dev/shm',
        type: 'tmpfs',
        source: 'shm',
        options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
      },
      {
        destination: '/dev/mqueue',
        type: 'mqueue',
        source: 'mqueue',
        options: ['nosuid', 'noexec', 'nodev'],
      },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      {
        destination: '/sys/fs/cgroup',
        type: 'cgroup',
        source: 'cgroup',
        options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'],
      },
      {
        destination: INIT_IN_CONTAINER,
        type: 'bind',
        source: o.initPath,
        options: ['bind', 'ro', 'nosuid', 'nodev'],
      },
    ],
    linux: {
      uidMappings: [{ containerID: 0, hostID: o.idBase, size: o.idSize }],
      gidMappings: [{ containerID: 0, hostID: o.idBase, size: o.idSize }],
      namespaces: ['pid', 'network', 'ipc', 'uts', 'mount', 'user', 'cgroup'].map((type) =>
        type === 'user' && o.userNamespace ? { type, path: o.userNamespace } : { type },
      ),
      cgroupsPath: o.cgroupsPath,
      resources: { devices: [{ allow: false, access: 'rwm' }], ...ociResources(o.limits) },
      maskedPaths: [
        '/proc/acpi',
        '/proc/asound',
        '/proc/kcore',
        '/proc/keys',
        '/proc/latency_stats',
        '/proc/timer_list',
        '/proc/timer_stats',
        '/proc/sched_debug',
        '/sys/firmware',
        '/proc/scsi',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
      // runc applies it to the init and to every exec'd process.
      ...(o.seccomp ? { seccomp: o.seccomp } : {}),
    },
  };
}

export interface ProcessSpecOptions {
  argv: readonly string[];
  env: Readonly<Record<string, string>>;
  cwd: string;
}

/** The shell every job's process is started under (EXEC_WRAPPER). */
export const EXEC_SHELL = '/bin/sh';

/**
 * What a job's process runs under: its argv in a subshell that has no fd 3, then its exit status
 * (`$?`: the code, or 128 + the signal) written to fd 3, a FIFO the host reads. `runc exec
 * --detach` (which keeps stdout and stderr one stream) does not wait for the process, and the
 * process's parent is then the container's init, which reaps it: this is how the code gets out.
 * `exec` in the subshell runs the command itself, never a shell builtin of the same name.
 */
export const EXEC_WRAPPER = '( exec "$@" ) 3>&-; echo $? >&3';

/** The process.json of one job's exec: argv (under EXEC_WRAPPER), env and cwd. Kept in a file so env (secrets) never shows in `ps`. */
export function createProcessSpec(o: ProcessSpecOptions) {
  const env = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/root',
    ...o.env,
  };
  return {
    terminal: false,
    user: { uid: 0, gid: 0 },
    args: [EXEC_SHELL, '-c', EXEC_WRAPPER, 'archway', ...o.argv],
    env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
    cwd: o.cwd,
    capabilities: { bounding: CAPABILITIES, effective: CAPABILITIES, permitted: CAPABILITIES },
    noNewPrivileges: true,
  };
}
