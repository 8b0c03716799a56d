import { access, readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { idRangeLayoutProblem, MAX_ID } from '../../../workers/index.ts';
import { HostConfig, parseConfig } from '../../config.ts';
import { ARCHES, hostArch } from '../../domain.ts';
import { archSupport } from '../../host/binfmt.ts';
import { cgroupMode } from '../../host/cgroups.ts';
import { hasCommand, runCommand } from '../../host/run-command.ts';

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
    .action(async () => {
      const config = parseConfig(HostConfig, env);
      const checks = await runChecks(config);
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

async function runChecks(config: HostConfig): Promise<Check[]> {
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
  add('zstd', await hasCommand('zstd'), 'compresses published images', `apt-get install zstd (${SETUP})`);
  for (const arch of ARCHES) {
    if (arch === hostArch()) {
      add(`binfmt ${arch}`, true, 'native', '');
      continue;
    }
    try {
      const s = await archSupport(arch);
      add(`binfmt ${arch}`, true, `emulated through ${s.interpreter ?? 'qemu-user'} (F flag)`, '');
    } catch (e) {
      add(
        `binfmt ${arch}`,
        false,
        (e as Error).message.split('; fix:')[0] ?? '',
        `apt-get install qemu-user-static binfmt-support; update-binfmts --enable (${SETUP})`,
      );
    }
  }
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

async function exists(p: string): Promise<boolean> {
  return access(p).then(
    () => true,
    () => false,
  );
}
