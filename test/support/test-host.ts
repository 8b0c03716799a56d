import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { createImageStore, type ImageStore } from '../../images/index.ts';
import {
  type Arch,
  ceilingsSet,
  cgroupMode,
  createHostLeases,
  createLogger,
  HostConfig,
  hostCeilings,
  type Limits,
  type Logger,
  parseConfig,
  poolLayout,
  runCommand,
} from '../../src/core/index.ts';
import {
  type ContainerRuntime,
  createJobLauncher,
  createRuncRuntime,
  createWarmPool,
  type JobLauncher,
  type LaunchedJob,
  runtimeOptionsFrom,
  type WarmPool,
} from '../../workers/index.ts';

/**
 * The pool and runtime state the tests use: never the host's own /var/lib/archway. Each can be
 * moved (ARCHWAY_TEST_POOL, ARCHWAY_TEST_RUN_DIR, ARCHWAY_TEST_CGROUP_PARENT, and the uid ranges
 * with ARCHWAY_TEST_UID_BASE, ARCHWAY_TEST_UID_LEASE_DIR) so that two suites run side by side on
 * one host without reaping each other's containers or sharing a kernel uid.
 */
export const TEST_ENV = {
  ARCHWAY_POOL_PATH: process.env.ARCHWAY_TEST_POOL ?? '/var/lib/archway-test',
  ARCHWAY_POOL_SIZE_GIB: '24',
  ARCHWAY_RUN_DIR: process.env.ARCHWAY_TEST_RUN_DIR ?? '/run/archway-test',
  ARCHWAY_CGROUP_PARENT: process.env.ARCHWAY_TEST_CGROUP_PARENT ?? 'archway-test',
  // Kernel uids are host-wide: a suite whose hostile tests exhaust a uid's key quota can keep off
  // the ranges of another suite running beside it (its pool's images are built for this base).
  ARCHWAY_UID_BASE: process.env.ARCHWAY_TEST_UID_BASE,
  ARCHWAY_UID_LEASE_DIR: process.env.ARCHWAY_TEST_UID_LEASE_DIR,
  ARCHWAY_LOG_LEVEL: process.env.ARCHWAY_TEST_LOG_LEVEL ?? 'warn',
} as const;

export const testConfig = (extra: Record<string, string> = {}): HostConfig =>
  parseConfig(HostConfig, { ...TEST_ENV, ...extra });

export interface TestHost {
  config: HostConfig;
  logger: Logger;
  store: ImageStore;
  runtime: ContainerRuntime;
  launcher: JobLauncher;
  warmPool: WarmPool | undefined;
}

export async function createTestHost(
  arch: Arch,
  /**
   * env: settings over the test ones (ARCHWAY_EGRESS_ALLOW, say); seccompProfile: another
   * profile file, or false for none (a probe's control run); ceilings: the operator's maxima.
   */
  opts: {
    warm?: Record<string, number>;
    adopt?: { max: number; per: number };
    env?: Record<string, string>;
    seccompProfile?: string | false;
    ceilings?: Partial<Limits>;
  } = {},
): Promise<TestHost> {
  const config = testConfig(opts.env);
  const logger = createLogger({ name: 'test', level: config.ARCHWAY_LOG_LEVEL });
  const store = createImageStore({ poolPath: config.ARCHWAY_POOL_PATH });
  const runtime = await createRuncRuntime({
    ...runtimeOptionsFrom(config, arch, logger),
    ...(opts.seccompProfile !== undefined ? { seccompProfile: opts.seccompProfile } : {}),
  });
  const warmPool = opts.warm
    ? createWarmPool({
        runtime,
        images: store,
        targets: opts.warm,
        limits: { cpus: 2, memoryMiB: 512, pids: 512, diskMiB: 1024 },
        logger,
        ...(opts.adopt ? { adopt: opts.adopt } : {}),
      })
    : undefined;
  const ceilings = hostCeilings({
    poolPath: config.ARCHWAY_POOL_PATH,
    poolSizeGiB: config.ARCHWAY_POOL_SIZE_GIB,
    set: { ...ceilingsSet(config), ...opts.ceilings },
  });
  const launcher = createJobLauncher({
    runtime,
    images: store,
    logger,
    ceilings,
    ...(warmPool ? { warmPool } : {}),
  });
  warmPool?.start();
  return { config, logger, store, runtime, launcher, warmPool };
}

/** Reads a job's whole output and its outcome. */
export async function collect(job: LaunchedJob) {
  const chunks: Buffer[] = [];
  job.output.on('data', (c: Buffer) => chunks.push(c));
  const outcome = await job.result;
  return { ...outcome, output: Buffer.concat(chunks).toString() };
}

/** What archway has left on the test host: containers, snapshots, bundles, processes. Empty when clean. */
export async function leftovers(): Promise<string[]> {
  const c = testConfig();
  const found: string[] = [];
  const listed = await runCommand('runc', ['--root', join(c.ARCHWAY_RUN_DIR, 'runc'), 'list', '-q']).catch(
    () => '',
  );
  for (const id of listed.split('\n').filter(Boolean)) found.push(`container ${id}`);
  const pool = poolLayout(c.ARCHWAY_POOL_PATH);
  for (const dir of [...pool.snapshotDirs, pool.bundles]) {
    for (const name of await readdir(dir).catch(() => [] as string[]))
      found.push(`${relative(pool.root, dir)}/${name}`);
  }
  // Job-network leases are host-wide (other suites may hold some): this process's must all be back.
  for (const [index, lease] of await createHostLeases({
    dir: join(c.ARCHWAY_NET_STATE_DIR, 'leases'),
    size: 1,
  }).list()) {
    if (lease.owner.pid === process.pid) found.push(`network lease ${index} of ${lease.id}`);
  }
  // uid ranges this process took (the lease directory is host-wide: other suites' leases are theirs).
  const leases = await createHostLeases({ dir: c.ARCHWAY_UID_LEASE_DIR, size: c.ARCHWAY_UID_RANGES }).list();
  for (const [index, holder] of leases) {
    if (holder.owner.pid === process.pid) found.push(`uid range ${index} held by ${holder.id}`);
  }
  found.push(...(await cgroupLeftovers(c.ARCHWAY_CGROUP_PARENT)));
  return found;
}

/**
 * The container cgroups left under `parent`, in the hierarchy the host uses: on v2 (unified) they
 * live in `<root>/<parent>/<id>`; on hybrid and v1 runc puts them in every v1 controller, and the
 * `pids` one holds every process. A check that read only v1 `pids` found nothing on a v2 host
 * (issue 10). A missing parent is clean: no container was ever made.
 */
export async function cgroupLeftovers(parent: string, root = '/sys/fs/cgroup'): Promise<string[]> {
  const mode = await cgroupMode(root);
  const dir = mode === 'v2' ? join(root, parent) : join(root, 'pids', parent);
  const found: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    if (!entry.isDirectory()) continue;
    const procs = await readFile(join(dir, entry.name, 'cgroup.procs'), 'utf8').catch(() => '');
    found.push(
      `cgroup ${entry.name}${procs.trim() ? ` with processes ${procs.trim().split('\n').join(',')}` : ''}`,
    );
  }
  return found;
}

/** Waits until `check` holds, polling; fails with `what` after `ms`. */
export async function eventually(
  check: () => Promise<boolean> | boolean,
  what: string,
  ms = 10_000,
): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for: ${what}`);
}
