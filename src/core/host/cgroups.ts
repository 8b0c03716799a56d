import { access, readFile } from 'node:fs/promises';

export type CgroupMode = 'v2' | 'hybrid' | 'v1';

/** Which cgroup layout the host has. crun needs the unified (v2) one; runc works with all. */
export async function cgroupMode(root = '/sys/fs/cgroup'): Promise<CgroupMode> {
  if (await present(`${root}/cgroup.controllers`)) return 'v2';
  if (await present(`${root}/unified/cgroup.controllers`)) return 'hybrid';
  return 'v1';
}

/**
 * How many times the kernel's OOM killer fired inside the container's cgroup. Read from
 * memory.events (v2) or memory.oom_control (v1); 0 when the cgroup is gone.
 */
export async function oomKills(
  mode: CgroupMode,
  cgroupPath: string,
  root = '/sys/fs/cgroup',
): Promise<number> {
  const file =
    mode === 'v2' ? `${root}${cgroupPath}/memory.events` : `${root}/memory${cgroupPath}/memory.oom_control`;
  try {
    const text = await readFile(file, 'utf8');
    return Number(text.match(/^oom_kill (\d+)/m)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

async function present(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}
