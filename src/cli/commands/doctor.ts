import { readFile, statfs } from 'node:fs/promises';
import type { Command } from 'commander';
import {
  CAPABILITIES,
  idRangeLayoutProblem,
  MAX_ID,
  packageCacheStats,
  seccompFor,
} from '../../../workers/index.ts';
import {
  ARCH_INFO,
  ARCHES,
  archSupport,
  ceilingsSet,
  cgroupMode,
  exists,
  HostConfig,
  hasCommand,
  hostArch,
  hostCeilings,
  isBtrfs,
  limitsWithin,
  parseConfig,
  runCommand,
} from '../../core/index.ts';
import { HOST_ENV_HELP } from '../host-context.ts';
import { positiveNumber } from '../parse.ts';

interface Check {
  name: string;
  ok: boolean;
  detail: string;
  fix: string;
  /** False for checks that only matter to some setups (crun). */
  required: boolean;
}

/** One line per requirement of a worker host; exit 0 only when every required one holds. */
export function registerDoctor(program: Command, env: Record<string, string | undefined>): void {
  program
    .command('doctor')
    .description('check that this host can run archway workers')
    .option('--slots <n>', 'job slots of all the workers this host runs together (the disk check)', '2')
    .addHelpText(
      'after',
      `${HOST_ENV_HELP}
  REDIS_URL             the Redis it checks (default redis://127.0.0.1:6379)

Example:
  ARCHWAY_POOL_PATH=/var/lib/archway archway doctor --slots 8`,
    )
    .action(async (opts: { slots: string }) => {
      const config = parseConfig(HostConfig, env);
      const slots = positiveNumber('--slots', opts.slots, true);
      const checks = await runChecks(config, slots);
      const width = Math.max(...checks.map((c) => c.name.length));
      for (const c of checks) {
        const status = c.ok ? 'ok     ' : c.required ? 'missing' : 'absent ';
        process.stdout.write(
          `${status}  ${c.name.padEnd(width)}  ${c.detail}${c.ok ? '' : `; fix: ${c.fix}`}\n`,
        );
      }
      const bad = checks.filter((c) => c.required && !c.ok);
      process.stdout.write(
        bad.length ? `\n${bad.length} requirement(s) missing\n` : '\nall requirements hold\n',
      );
      process.exitCode = bad.length ? 1 : 0;
    });
}

const SETUP = 'bash ops/setup-host.sh';

async function runChecks(config: HostConfig, slots: number): Promise<Check[]> {
  const checks: Check[] = [];
  const add = (name: string, ok: boolean, detail: string, fix: string, required = true) =>
    checks.push({ name, ok, detail, fix, required });

  const fs = await readFile('/proc/filesystems', 'utf8').catch(() => '');
  add(
    'btrfs',
    fs.includes('btrfs') && (await hasCommand('btrfs')),
    'btrfs in the kernel and btrfs-progs',
    `modprobe btrfs; apt-get install btrfs-progs (${SETUP})`,
  );
  add(
    'loop devices',
    await exists('/dev/loop-control'),
    '/dev/loop-control (for a loop-backed pool)',
    'modprobe loop',
  );
  const runcVersion = await runCommand('runc', ['--version']).catch(() => '');
  add(
    'runc',
    runcVersion !== '',
    runcVersion.split('\n')[0] || 'runc not found',
    `apt-get install runc (${SETUP})`,
  );
  // runc built without libseccomp refuses every container that has a filter: say it here.
  const libseccomp = runcVersion.match(/^libseccomp: (\S+)/m)?.[1];
  try {
    const filter = await seccompFor(config.ARCHWAY_SECCOMP_PROFILE, CAPABILITIES);
    add(
      'seccomp',
      libseccomp !== undefined,
      `${config.ARCHWAY_SECCOMP_PROFILE}: ${filter.syscalls.length} rules for ${filter.architectures.join(', ')}; runc ${libseccomp ? `has libseccomp ${libseccomp}` : 'was built without libseccomp'}`,
      "a runc built with libseccomp (Debian's is)",
    );
  } catch (e) {
    add(
      'seccomp',
      false,
      ((e as Error).message.split('; fix:')[0] ?? '').trim(),
      (e as { fix?: string }).fix ?? `apt-get install golang-github-containers-common (${SETUP})`,
    );
  }
  const crun = await hasCommand('crun');
  const mode = await cgroupMode();
  add(
    'crun',
    crun && mode === 'v2',
    crun
      ? `installed; cgroups are ${mode}${mode === 'v2' ? '' : ' (crun needs v2; runc is used)'}`
      : 'not installed (optional: runc is used)',
    'apt-get install crun on a host with unified cgroups',
    false,
  );
  const maxNs = Number(
    (await readFile('/proc/sys/user/max_user_namespaces', 'utf8').catch(() => '0')).trim(),
  );
  add(
    'user namespaces',
    maxNs > 0,
    `user.max_user_namespaces = ${maxNs}`,
    'sysctl -w user.max_user_namespaces=15000',
  );
  const maxKeys = Number((await readFile('/proc/sys/kernel/keys/maxkeys', 'utf8').catch(() => '0')).trim());
  add(
    'kernel keys',
    maxKeys >= 2000,
    `kernel.keys.maxkeys = ${maxKeys} per container (each has its own root uid; runc makes a session keyring per container and exec)`,
    'sysctl -w kernel.keys.maxkeys=20000 kernel.keys.maxbytes=2000000 (ops/setup-host.sh does it)',
  );
  const { ARCHWAY_UID_BASE: base, ARCHWAY_UID_SIZE: size, ARCHWAY_UID_RANGES: ranges } = config;
  const end = base + ranges * size;
  const layout = idRangeLayoutProblem({ base, size, count: ranges });
  add(
    'id ranges',
    base > 0 && !layout,
    layout ??
      `${ranges} ranges of ${size} ids: container root maps to host uids ${base}, ${base + size}, ... (up to ${end - 1})`,
    `lower ARCHWAY_UID_BASE, ARCHWAY_UID_RANGES or ARCHWAY_UID_SIZE so that base + ranges * size - 1 <= ${MAX_ID}`,
  );
  // Users given subordinate ids (rootless podman, Debian's adduser) or real accounts in archway's
  // ranges would share kernel uids, and so quotas and file access, with jobs.
  const clashes = await idClashes(base, end);
  add(
    'id ranges unused',
    clashes.length === 0,
    clashes.length
      ? `host ids in archway's ranges: ${clashes.slice(0, 3).join('; ')}`
      : `no account, /etc/subuid or /etc/subgid entry in ${base}-${end - 1}`,
    `set ARCHWAY_UID_BASE past them (for example ${Math.ceil((await highestSubId()) / 65536 + 1) * 65536}), or move those entries`,
  );
  const userns = await runCommand('setpriv', [
    `--reuid=${base}`,
    `--regid=${base}`,
    '--clear-groups',
    'unshare',
    '--user',
    'true',
  ]).then(
    () => '',
    (e: unknown) => (e as Error).message,
  );
  add(
    'unprivileged user namespaces',
    userns === '',
    userns
      ? `a process as uid ${base} cannot make a user namespace: ${userns}`
      : "made by each container's own root uid, so the container's inotify and namespace counts are its own",
    'allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 on older Debian kernels; kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu)',
  );
  const memCgroup =
    mode === 'v2'
      ? await exists('/sys/fs/cgroup/cgroup.controllers')
      : await exists('/sys/fs/cgroup/memory/memory.limit_in_bytes');
  const pidsCgroup = mode === 'v2' ? true : await exists('/sys/fs/cgroup/pids');
  add(
    'cgroups',
    memCgroup && pidsCgroup,
    `${mode} hierarchy with memory, pids and cpu controllers`,
    'mount the cgroup hierarchies (a systemd host has them)',
  );
  add(
    'static init',
    await exists(config.ARCHWAY_INIT),
    config.ARCHWAY_INIT,
    `apt-get install catatonit (${SETUP})`,
  );
  add(
    'mmdebstrap',
    await hasCommand('mmdebstrap'),
    'builds the Debian images',
    `apt-get install mmdebstrap (${SETUP})`,
  );
  // mmdebstrap only recommends these, and setup-host.sh installs without recommends.
  const archTest = await hasCommand('arch-test');
  add(
    'arch-test',
    archTest,
    'mmdebstrap needs it to build a Debian image of a foreign arch',
    `apt-get install arch-test (${SETUP})`,
  );
  add(
    'gpg',
    await hasCommand('gpg'),
    "mmdebstrap reads the suite's keyring with it",
    `apt-get install gpg (${SETUP})`,
    false,
  );
  add('zstd', await hasCommand('zstd'), 'compresses published images', `apt-get install zstd (${SETUP})`);
  add(
    'git',
    await hasCommand('git'),
    "fetches jobs' sources into the host's mirror",
    `apt-get install git (${SETUP})`,
  );
  add(
    'ip',
    await hasCommand('ip'),
    'gives egress containers their veth',
    `apt-get install iproute2 (${SETUP})`,
  );
  add(
    'setcap',
    await hasCommand('setcap'),
    'keeps file capabilities through the owner shift',
    `apt-get install libcap2-bin (${SETUP})`,
  );
  for (const arch of ARCHES) {
    if (arch === hostArch()) {
      add(`binfmt ${arch}`, true, 'native', '');
      continue;
    }
    try {
      const s = await archSupport(arch);
      add(`binfmt ${arch}`, true, `emulated through ${s.interpreter ?? 'qemu-user'} (F flag)`, '');
      // What mmdebstrap itself asks before a foreign build: can this host run the arch's binaries?
      if (archTest) {
        const debian = ARCH_INFO[arch].debian;
        const out = await runCommand('arch-test', [debian]).then(
          (o) => ({ ok: true, text: o.trim() }),
          (e: unknown) => ({ ok: false, text: (e as Error).message }),
        );
        add(
          `image build ${arch}`,
          out.ok,
          out.ok ? `arch-test ${debian}: ok` : `arch-test ${debian} failed: ${out.text}`,
          `apt-get install qemu-user-static binfmt-support; update-binfmts --enable (${SETUP})`,
        );
      }
    } catch (e) {
      add(
        `binfmt ${arch}`,
        false,
        (e as Error).message.split('; fix:')[0] ?? '',
        `apt-get install qemu-user-static binfmt-support; update-binfmts --enable (${SETUP})`,
      );
    }
  }
  // Job egress: the worker sets the network up itself (nftables table, forwarding, the DNS
  // forwarder and the package cache); what doctor checks is that it can.
  const egressOn = config.ARCHWAY_EGRESS;
  for (const [cmd, pkg, what] of [
    ['nft', 'nftables', 'filters and NATs job egress'],
    ['dnsmasq', 'dnsmasq-base', "answers jobs' DNS from the host's resolver"],
    ['apt-cacher-ng', 'apt-cacher-ng', "caches Debian packages for every egress job's apt"],
  ] as const) {
    add(
      cmd,
      !egressOn || (await hasCommand(cmd)),
      egressOn ? what : 'not needed: ARCHWAY_EGRESS=false',
      `apt-get install ${pkg} (${SETUP})`,
      egressOn,
    );
  }
  if (egressOn) {
    const stateDir = config.ARCHWAY_NET_STATE_DIR;
    const pid = Number((await readFile(`${stateDir}/apt-cacher-ng/pid`, 'utf8').catch(() => '')).trim());
    let running = false;
    try {
      if (pid > 0) process.kill(pid, 0);
      running = pid > 0;
    } catch {}
    const stats = running ? await packageCacheStats(`${stateDir}/apt-cacher-ng/log`) : undefined;
    add(
      'package cache',
      running,
      running && stats
        ? `apt-cacher-ng running (pid ${pid}): ${stats.hits} hits, ${stats.misses} misses, ${stats.bytesIn} bytes from the mirror, ${stats.bytesOut} to jobs`
        : 'not running yet: the first worker (or archway up) starts it',
      'start a worker, or bin/archway up',
      false,
    );
  }
  const ceilings = hostCeilings({
    poolPath: config.ARCHWAY_POOL_PATH,
    poolSizeGiB: config.ARCHWAY_POOL_SIZE_GIB,
    set: ceilingsSet(config),
  });
  add(
    'ceilings',
    true,
    `one job may ask for at most ${ceilings.cpus} CPUs, ${ceilings.memoryMiB} MiB of memory, ${ceilings.pids} pids, ${ceilings.diskMiB} MiB of disk`,
    '',
  );
  // Every slot may fill its default disk at once: the pool must have that room, or jobs get ENOSPC.
  const MiB = 1024 * 1024;
  const pool = (await isBtrfs(config.ARCHWAY_POOL_PATH))
    ? await statfs(config.ARCHWAY_POOL_PATH).then((s) => ({
        mib: Math.floor((s.bavail * s.bsize) / MiB),
        what: 'free in the pool',
      }))
    : { mib: config.ARCHWAY_POOL_SIZE_GIB * 1024, what: 'in the pool it makes (ARCHWAY_POOL_SIZE_GIB)' };
  const disk = limitsWithin({}, ceilings).diskMiB;
  add(
    'pool room',
    disk * slots <= pool.mib,
    `${slots} slots x ${disk} MiB of default disk = ${disk * slots} MiB; ${pool.mib} MiB ${pool.what}`,
    'a larger pool (ARCHWAY_POOL_SIZE_GIB, or more room on its filesystem), fewer slots, or a lower ARCHWAY_MAX_DISK_MIB (the default disk is lowered to it)',
  );
  add(
    'redis-server',
    await hasCommand('redis-server'),
    'Redis for the queue and the cluster',
    `apt-get install redis-server (${SETUP})`,
  );
  return checks;
}

/** Accounts and subordinate id entries that fall in [start, end). */
async function idClashes(start: number, end: number): Promise<string[]> {
  const out: string[] = [];
  for (const file of ['/etc/subuid', '/etc/subgid']) {
    for (const line of (await readFile(file, 'utf8').catch(() => '')).split('\n')) {
      const [name, first, count] = line.trim().split(':');
      const a = Number(first);
      const n = Number(count);
      if (!name || !Number.isInteger(a) || !Number.isInteger(n)) continue;
      if (a < end && a + n > start) out.push(`${file} ${name}:${a}:${n}`);
    }
  }
  for (const file of ['/etc/passwd', '/etc/group']) {
    for (const line of (await readFile(file, 'utf8').catch(() => '')).split('\n')) {
      const [name, , id] = line.split(':');
      const n = Number(id);
      if (name && Number.isInteger(n) && n >= start && n < end) out.push(`${file} ${name} (${n})`);
    }
  }
  return out;
}

/** The first id past every /etc/subuid and /etc/subgid entry. */
async function highestSubId(): Promise<number> {
  let top = 0;
  for (const file of ['/etc/subuid', '/etc/subgid']) {
    for (const line of (await readFile(file, 'utf8').catch(() => '')).split('\n')) {
      const [, first, count] = line.trim().split(':');
      const end = Number(first) + Number(count);
      if (Number.isFinite(end)) top = Math.max(top, end);
    }
  }
  return top;
}
