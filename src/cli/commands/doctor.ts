import { access, readFile, statfs } from 'node:fs/promises';
import type { Command } from 'commander';
import { HostConfig, parseConfig } from '../../config.ts';
import { ARCHES, hostArch } from '../../domain.ts';
import { archSupport } from '../../host/binfmt.ts';
import { isBtrfs } from '../../host/btrfs.ts';
import { ceilingsSet, hostCeilings, limitsWithin } from '../../host/ceilings.ts';
import { cgroupMode } from '../../host/cgroups.ts';
import { hasCommand, runCommand } from '../../host/run-command.ts';
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
    `kernel.keys.maxkeys = ${maxKeys} (every container's session keyring counts against its root's host uid)`,
    'sysctl -w kernel.keys.maxkeys=20000 kernel.keys.maxbytes=2000000 (ops/setup-host.sh does it)',
  );
  const idRange = `${config.ARCHWAY_UID_BASE}-${config.ARCHWAY_UID_BASE + config.ARCHWAY_UID_SIZE - 1}`;
  add(
    'id range',
    config.ARCHWAY_UID_BASE > 0,
    `container root maps to host uids ${idRange}`,
    'set ARCHWAY_UID_BASE to an unused range',
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

async function exists(p: string): Promise<boolean> {
  return access(p).then(
    () => true,
    () => false,
  );
}
