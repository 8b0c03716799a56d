import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { closeSync, constants, openSync, writeSync } from 'node:fs';
import { access, lchown, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { imageForRange, type ResolvedImage } from '../images/index.ts';
import {
  AbortedError,
  type Arch,
  ArchwayError,
  archSupport,
  type CgroupMode,
  cgroupMode,
  createHostLeases,
  deleteSubvolume,
  exists,
  HOST_ENV,
  HostCommandError,
  type HostConfig,
  HostRequirementError,
  hasCommand,
  InvalidInputError,
  type Limits,
  type Logger,
  leaseHolderAlive,
  limitExclusive,
  type NetworkMode,
  oomKills,
  type ProcessIdentity,
  poolLayout,
  processAlive,
  processIdentity,
  runCommand,
  snapshotSubvolume,
  toError,
} from '../src/core/index.ts';
import type { Container, ContainerRuntime, ExecResult, Execution, RuntimeCtl } from './container-runtime.ts';
import {
  createEgressNetwork,
  type EgressNetwork,
  type EgressNetworkOptions,
  type NetworkAttachment,
} from './egress-network.ts';
import { JobOutput } from './job-output.ts';
import { CAPABILITIES, createOciSpec, createProcessSpec, EXEC_SHELL, ociResources } from './oci-spec.ts';
import { startOrphanWatch } from './orphan-watch.ts';
import { seccompFor } from './seccomp-profile.ts';
import {
  createUserNamespace,
  idRangeLayoutProblem,
  idRangeOf,
  limitUcounts,
  type UcountLimits,
} from './user-namespace.ts';

export interface RuncRuntimeOptions {
  arch: Arch;
  /** The btrfs pool (already ensured): snapshots go to warm/ and jobs/, bundles to bundles/. */
  poolPath: string;
  /** State directory of the OCI runtime; archway's containers are the only ones in it. */
  runDir: string;
  /** runc, crun, or auto: crun where cgroups are unified (v2), else runc. */
  ociRuntime: 'auto' | 'runc' | 'crun';
  /** cgroup every container's cgroup is made in. */
  cgroupParent: string;
  /** Host path of the static init containers idle in (catatonit). */
  initPath: string;
  /** Host uid/gid of range 0 (where images are stored shifted) and the size of every range. */
  idBase: number;
  idSize: number;
  /** The job network of this host; without it, a container with `network: egress` cannot be made. */
  egress?: Omit<EgressNetworkOptions, 'logger'> | undefined;
  /** Docker-format seccomp profile every container's filter is made from; `false`: none (the launch benchmark's baseline only). */
  seccompProfile: string | false;
  /** How many uid ranges the host has: container root of range k maps to idBase + k * idSize. */
  idRanges: number;
  /** Lease directory of the uid ranges: one per host, shared by every process that makes containers. */
  idLeaseDir: string;
  /** Per-uid limits set in each container's user namespace. */
  ucounts: UcountLimits;
  logger: Logger;
}

/** The runtime's options as a host process's configuration gives them. */
export function runtimeOptionsFrom(config: HostConfig, arch: Arch, logger: Logger): RuncRuntimeOptions {
  return {
    arch,
    poolPath: config.ARCHWAY_POOL_PATH,
    runDir: config.ARCHWAY_RUN_DIR,
    ociRuntime: config.ARCHWAY_OCI_RUNTIME,
    cgroupParent: config.ARCHWAY_CGROUP_PARENT,
    initPath: config.ARCHWAY_INIT,
    idBase: config.ARCHWAY_UID_BASE,
    idSize: config.ARCHWAY_UID_SIZE,
    ...(config.ARCHWAY_EGRESS
      ? {
          egress: {
            subnet: config.ARCHWAY_EGRESS_SUBNET,
            allow: config.ARCHWAY_EGRESS_ALLOW,
            leasesDir: join(config.ARCHWAY_NET_STATE_DIR, 'leases'),
            stateDir: config.ARCHWAY_NET_STATE_DIR,
            aptCacheDir: config.ARCHWAY_APT_CACHE_DIR ?? poolLayout(config.ARCHWAY_POOL_PATH).aptCache,
            aptCacheBytes: Math.round(config.ARCHWAY_APT_CACHE_GIB * 2 ** 30),
            mirror: config.ARCHWAY_DEBIAN_MIRROR,
          },
        }
      : {}),
    seccompProfile: config.ARCHWAY_SECCOMP_PROFILE,
    idRanges: config.ARCHWAY_UID_RANGES,
    idLeaseDir: config.ARCHWAY_UID_LEASE_DIR,
    ucounts: {
      inotifyInstances: config.ARCHWAY_CONTAINER_MAX_INOTIFY_INSTANCES,
      inotifyWatches: config.ARCHWAY_CONTAINER_MAX_INOTIFY_WATCHES,
      fanotifyGroups: config.ARCHWAY_CONTAINER_MAX_FANOTIFY_GROUPS,
      fanotifyMarks: config.ARCHWAY_CONTAINER_MAX_FANOTIFY_MARKS,
      namespaces: config.ARCHWAY_CONTAINER_MAX_NAMESPACES,
    },
    logger,
  };
}

/** Every container archway makes has an id with this prefix; nothing else is touched. */
export const CONTAINER_PREFIX = 'aw-';
/** How long output may go on after the job's process exited before the container is killed. */
const GRACE_FOR_OUTPUT_MS = 100;

/** The process that made a container: a reused pid does not count as alive (src/core/host/host-leases.ts). */
type Owner = ProcessIdentity;

/**
 * Digests of the image versions that containers on the pool at `poolPath` were made from, by any
 * process (a worker's running jobs and warm containers, a `run`): every container's record is
 * written before its snapshot is made, so one being made counts too.
 */
export async function imagesInUseOn(poolPath: string): Promise<Set<string>> {
  const bundles = poolLayout(poolPath).bundles;
  const digests = new Set<string>();
  for (const id of await readdir(bundles).catch(() => [] as string[])) {
    const meta = await readFile(join(bundles, id, 'meta.json'), 'utf8')
      .then((t) => JSON.parse(t) as ContainerMeta)
      .catch(() => undefined);
    if (meta?.image.digest) digests.add(meta.image.digest);
  }
  return digests;
}

interface ContainerMeta {
  owner: Owner;
  image: { name: string; arch: Arch; digest: string };
  jobId?: string;
  createdAt: string;
  /** The container's job-network lease, once it has one (egress containers). */
  netIndex?: number;
  /** The uid range leased to the container (released once its processes are gone). */
  uidRange?: number;
}

interface RuncContainer extends Container {
  readonly initPid: number;
  /** Start time of the init (see Owner.start): tells it apart from a later process with its pid. */
  readonly initStart: string;
  readonly cgroupsPath: string;
  execed: boolean;
}

/**
 * The runc (or crun) driver: unprivileged containers in a user namespace from btrfs snapshots.
 * One instance serves one arch; several can share a pool, and reap only what dead processes left.
 */
export async function createRuncRuntime(o: RuncRuntimeOptions): Promise<ContainerRuntime> {
  const layout = { base: o.idBase, size: o.idSize, count: o.idRanges };
  const layoutProblem = idRangeLayoutProblem(layout);
  if (layoutProblem) throw new InvalidInputError('ARCHWAY_UID_RANGES', layoutProblem);
  const leases = createHostLeases({ dir: o.idLeaseDir, size: o.idRanges, what: 'uid ranges' });
  const support = await archSupport(o.arch);
  const mode = await cgroupMode();
  const ociRuntime =
    o.ociRuntime === 'auto' ? (mode === 'v2' && (await hasCommand('crun')) ? 'crun' : 'runc') : o.ociRuntime;
  if (ociRuntime === 'crun' && mode !== 'v2') {
    throw new HostRequirementError(
      `crun needs unified (v2) cgroups, and this host's are ${mode}`,
      'set ARCHWAY_OCI_RUNTIME=runc (or auto)',
    );
  }
  if (!(await hasCommand(ociRuntime))) {
    throw new HostRequirementError(
      `${ociRuntime} is not installed`,
      `apt-get install ${ociRuntime} (or run ops/setup-host.sh)`,
    );
  }
  try {
    await access(o.initPath, constants.X_OK);
  } catch {
    throw new HostRequirementError(
      `the static init ${o.initPath} is missing`,
      'apt-get install catatonit, or set ARCHWAY_INIT',
    );
  }
  // Read and compiled here, once: a missing or broken profile stops the worker at start, naming the file.
  const seccomp = o.seccompProfile === false ? undefined : await seccompFor(o.seccompProfile, CAPABILITIES);
  const stateRoot = join(o.runDir, ociRuntime);
  const egress: EgressNetwork | undefined = o.egress
    ? await createEgressNetwork({ ...o.egress, logger: o.logger })
    : undefined;
  const aptHostSettings = egress ? await hostAptSettings() : [];
  await mkdir(stateRoot, { recursive: true, mode: 0o700 });
  const me: Owner = { pid: process.pid, start: await processStart(process.pid) };
  const pool = poolLayout(o.poolPath);
  const bundleOf = (id: string) => join(pool.bundles, id);
  const readMeta = (id: string) =>
    readFile(join(bundleOf(id), 'meta.json'), 'utf8')
      .then((t) => JSON.parse(t) as ContainerMeta)
      .catch(() => undefined);
  const oci = (args: string[], ctl: RuntimeCtl, extra: { log?: string; detached?: boolean } = {}) =>
    runCommand(
      ociRuntime,
      ['--root', stateRoot, ...(extra.log ? ['--log', extra.log, '--log-format', 'json'] : []), ...args],
      {
        label: `${ociRuntime} ${args[0]}`,
        detachedOutput: extra.detached,
        signal: ctl.signal,
        timeoutMs: remaining(ctl, 30_000),
      },
    );

  async function destroyById(id: string, ctl: RuntimeCtl): Promise<void> {
    const errors: Error[] = [];
    const meta = await readMeta(id);
    // Order: processes first (they hold the snapshot busy), then the snapshot, then the bundle,
    // then the uid range, once no process of the container can hold it.
    await oci(['delete', '--force', id], { deadline: ctl.deadline }).catch((e: unknown) => {
      if (!/does not exist|not found/i.test(toError(e).message)) errors.push(toError(e));
    });
    const processesGone = errors.length === 0;
    // The veth went with the container's network namespace; this removes a straggler and gives the address back.
    if (processesGone && meta?.netIndex !== undefined && egress)
      await egress.detach(id, meta.netIndex).catch((e: unknown) => errors.push(toError(e)));
    for (const dir of pool.snapshotDirs) {
      const path = join(dir, id);
      if (!(await exists(path))) continue;
      await deleteSubvolume(path, { timeoutMs: remaining(ctl, 60_000) }).catch(async (e: unknown) => {
        // Another process reaping the same leftovers may have deleted it first: gone is what we wanted.
        if (await exists(path)) errors.push(toError(e));
      });
    }
    await rm(bundleOf(id), { recursive: true, force: true }).catch((e: unknown) => errors.push(toError(e)));
    if (processesGone && meta?.uidRange !== undefined)
      await leases.release(meta.uidRange, id).catch((e: unknown) => errors.push(toError(e)));
    if (errors.length)
      throw new AggregateError(
        errors,
        `destroying container ${id}: ${errors.map((e) => e.message).join('; ')}`,
      );
  }

  async function applyLimits(c: RuncContainer, limits: Limits, ctl: RuntimeCtl): Promise<void> {
    const steps: Promise<unknown>[] = [];
    const r = ociResources(limits);
    if (
      limits.memoryMiB !== c.limits.memoryMiB ||
      limits.pids !== c.limits.pids ||
      limits.cpus !== c.limits.cpus
    ) {
      steps.push(
        oci(
          [
            'update',
            '--memory',
            String(r.memory.limit),
            '--memory-swap',
            String(r.memory.swap),
            '--pids-limit',
            String(r.pids.limit),
            '--cpu-quota',
            String(r.cpu.quota),
            '--cpu-period',
            String(r.cpu.period),
            c.id,
          ],
          ctl,
        ),
      );
    }
    if (limits.diskMiB !== c.limits.diskMiB) {
      steps.push(
        limitExclusive(rootfsOf(c), limits.diskMiB * 1024 * 1024, { timeoutMs: remaining(ctl, 10_000) }),
      );
    }
    await Promise.all(steps);
  }

  const rootfsOf = (c: { id: string }) =>
    join(c.id.startsWith(`${CONTAINER_PREFIX}warm-`) ? pool.warm : pool.jobs, c.id);

  const runtime: ContainerRuntime = {
    arch: o.arch,
    emulated: support.emulated,
    ociRuntime,
    egress: egress !== undefined,
    packageCacheStats: async () => egress?.cacheStats(),

    async prepare(
      image: ResolvedImage,
      limits: Limits,
      ctl: RuntimeCtl & { jobId?: string; network?: NetworkMode },
    ) {
      abortIfNeeded(ctl, 'prepare');
      const network = ctl.network ?? 'none';
      if (network === 'egress' && !egress)
        throw new ArchwayError(
          'EGRESS_UNAVAILABLE',
          'this node does not give jobs network egress (ARCHWAY_EGRESS=false on the worker)',
        );
      if (image.arch !== o.arch)
        throw new ArchwayError(
          'ARCH_MISMATCH',
          `image ${image.name} is for ${image.arch}, this runtime serves ${o.arch}`,
        );
      const id = ctl.jobId
        ? `${CONTAINER_PREFIX}${ctl.jobId}-${rand()}`
        : `${CONTAINER_PREFIX}warm-${rand()}`;
      const bundle = bundleOf(id);
      const rootfs = rootfsOf({ id });
      const cgroupsPath = `/${o.cgroupParent}/${id}`;
      let rangeIndex: number | undefined;
      let userns: { path: string; close(): void } | undefined;
      try {
        // The uid range first (no two live containers of the host share one), then the owner
        // record with it, so a concurrent reap by another process never sees an ownerless container.
        const index = await leases.acquire({ id, owner: me });
        rangeIndex = index;
        const range = idRangeOf(layout, index);
        await mkdir(bundle, { recursive: true, mode: 0o700 });
        const meta: ContainerMeta = {
          owner: me,
          image: { name: image.name, arch: image.arch, digest: image.digest },
          ...(ctl.jobId ? { jobId: ctl.jobId } : {}),
          createdAt: new Date().toISOString(),
          uidRange: index,
        };
        await writeFile(join(bundle, 'meta.json'), JSON.stringify(meta));
        // The user namespace (a few ms) is made while the image of this range is snapshotted: its
        // copy made once per (version, range), then a snapshot as before.
        const nsMade = createUserNamespace(range.hostId, o.idSize, remaining(ctl, 10_000));
        try {
          const source = await imageForRange(image, range);
          await snapshotSubvolume(source, rootfs, { timeoutMs: remaining(ctl, 30_000) });
        } finally {
          userns = await nsMade.catch(() => undefined);
        }
        if (!userns) userns = await nsMade;
        await Promise.all([
          writeNetworkFiles(rootfs, network, {
            owner: range.hostId,
            ...(egress ? { nameserver: egress.serviceAddress, aptProxy: egress.aptProxy } : {}),
            aptSettings: aptHostSettings,
          }),
          limitExclusive(rootfs, limits.diskMiB * 1024 * 1024, { timeoutMs: remaining(ctl, 10_000) }),
          // The job may reopen its stdout (`> /dev/stderr`): the output FIFO is its root's; the
          // status FIFO stays the host's.
          runCommand('mkfifo', ['-m', '0600', join(bundle, 'output.fifo'), join(bundle, 'status.fifo')]).then(
            () => lchown(join(bundle, 'output.fifo'), range.hostId, range.hostId),
          ),
          writeFile(
            join(bundle, 'config.json'),
            JSON.stringify(
              createOciSpec({
                rootfs,
                hostname: id,
                idBase: range.hostId,
                idSize: o.idSize,
                userNamespace: userns.path,
                limits,
                cgroupsPath,
                initPath: o.initPath,
                seccomp,
              }),
            ),
          ),
        ]);
        abortIfNeeded(ctl, 'prepare');
        // Not cancelled half-way: a runc killed mid-create is harder to clean than one let finish (~40 ms).
        await oci(
          ['run', '--detach', '--pid-file', join(bundle, 'init.pid'), '--bundle', bundle, id],
          { deadline: ctl.deadline },
          {
            log: join(bundle, 'runc.log'),
            detached: true,
          },
        ).catch(async (e: unknown) => {
          // Its stderr went to the container's init, so the reason is in the log.
          const why = await lastRuncError(join(bundle, 'runc.log'));
          throw new HostCommandError(
            `${ociRuntime} run`,
            e instanceof HostCommandError ? e.exitCode : undefined,
            why || toError(e).message,
          );
        });
        userns.close();
        const initPid = Number((await readFile(join(bundle, 'init.pid'), 'utf8')).trim());
        let attachment: NetworkAttachment | undefined;
        if (network === 'egress' && egress) {
          attachment = await egress.attach(id, initPid, me);
          await writeFile(join(bundle, 'meta.json'), JSON.stringify({ ...meta, netIndex: attachment.index }));
        }
        // The lease outlives this process while the container runs (an orphan keeps its range).
        await Promise.all([
          processIdentity(initPid).then((init) =>
            init ? leases.update(index, { id, owner: me, init }) : undefined,
          ),
          limitUcounts(initPid, o.ucounts, remaining(ctl, 10_000)),
        ]);
        const initStart = await processStart(initPid);
        abortIfNeeded(ctl, 'prepare');
        const c: RuncContainer = {
          id,
          image,
          limits,
          network,
          ...(attachment ? { address: attachment.address } : {}),
          readyAt: Date.now(),
          rootfs,
          idBase: range.hostId,
          initPid,
          initStart,
          cgroupsPath,
          execed: false,
        };
        return c;
      } catch (e) {
        userns?.close();
        const cleaned = await destroyById(id, {}).then(
          () => true,
          (err: unknown) => {
            o.logger.error({ err, id }, 'cleanup of a half-made container failed');
            return false;
          },
        );
        // The range may have been taken before the record naming it was written: give it back here.
        if (cleaned && rangeIndex !== undefined) await leases.release(rangeIndex, id).catch(() => undefined);
        if (ctl.signal?.aborted) throw new AbortedError('prepare', ctl.signal.reason);
        throw e;
      }
    },

    async exec(container, req, ctl) {
      const c = container as RuncContainer;
      if (c.execed)
        throw new ArchwayError(
          'CONTAINER_USED',
          `container ${c.id} already ran a job; a container is used once`,
        );
      c.execed = true;
      abortIfNeeded(ctl, 'exec');
      const bundle = bundleOf(c.id);
      const processFile = join(bundle, 'process.json');
      await Promise.all([
        writeFile(processFile, JSON.stringify(createProcessSpec(req)), { mode: 0o600 }),
        // hostname = job id: set from the host in the container's UTS namespace, as a warm container predates its job.
        runCommand('nsenter', ['--target', String(c.initPid), '--uts', 'hostname', req.jobId], {
          timeoutMs: remaining(ctl, 10_000),
        }),
        applyLimits(c, req.limits, ctl),
        readFile(join(bundle, 'meta.json'), 'utf8').then((m) =>
          writeFile(join(bundle, 'meta.json'), JSON.stringify({ ...JSON.parse(m), jobId: req.jobId })),
        ),
        // Should this process die, the job's deadline still holds (docs/architecture.md, Orphans).
        // Started here, while the steps above wait on their commands, not on the launch's path.
        req.killAt !== undefined
          ? startOrphanWatch({ initPid: c.initPid, initStart: c.initStart, killAt: req.killAt })
          : undefined,
      ]);
      abortIfNeeded(ctl, 'exec');
      // One FIFO is the process's stdout and stderr, all the way: the kernel keeps the order of
      // the two. `runc exec` without a terminal would copy each through a pipe of its own
      // (issue 10); detached, it hands its own fds 1 and 2 to the process as they are.
      const fifo = join(bundle, 'output.fifo');
      const readFd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
      const writeFd = openSync(fifo, constants.O_WRONLY);
      // The process's exit status comes back on its fd 3 (EXEC_WRAPPER), from a FIFO that only the
      // host can open: the job can neither forge it nor hold it open.
      const statusFifo = join(bundle, 'status.fifo');
      const statusReadFd = openSync(statusFifo, constants.O_RDONLY | constants.O_NONBLOCK);
      const statusWriteFd = openSync(statusFifo, constants.O_WRONLY);
      const execLog = join(bundle, 'exec.log');
      const proc = spawn(
        ociRuntime,
        [
          '--root',
          stateRoot,
          '--log',
          execLog,
          '--log-format',
          'json',
          'exec',
          '--detach',
          '--preserve-fds',
          '1',
          '--process',
          processFile,
          c.id,
        ],
        { env: HOST_ENV, stdio: ['ignore', writeFd, writeFd, statusWriteFd] },
      );
      closeSync(statusWriteFd);
      const started = new Promise<number>((resolve) => {
        proc.once('exit', (code) => resolve(code ?? 255));
        proc.once('error', () => resolve(255));
      });
      const output = new JobOutput(readFd);
      const ended = once(output, 'end').then(
        () => undefined,
        () => undefined,
      );
      const status = readStatus(new Socket({ fd: statusReadFd, readable: true, writable: false }));
      const done = (async (): Promise<ExecResult> => {
        const runc = await started;
        if (runc !== 0) {
          // runc said why in its log; the process never started, and the FIFO's last writer is ours.
          const err = await lastRuncError(execLog);
          const missing = /executable file not found|no such file or directory/i.test(err);
          if (missing)
            writeSync(
              writeFd,
              `archway: the image has no ${EXEC_SHELL}, which every job's process runs under\n`,
            );
          closeSync(writeFd);
          await ended;
          if (missing) return { exitCode: 127, oomKilled: false };
          throw new HostCommandError(`${ociRuntime} exec`, runc, err || `exited with ${runc}`);
        }
        closeSync(writeFd);
        // No status: the wrapper itself was killed (the container's kill, the OOM killer, the job).
        const exitCode = (await status) ?? 137;
        // Processes the job left in the background still hold the FIFO: the job is over, so end them.
        const grace = await Promise.race([
          ended.then(() => true),
          sleep(GRACE_FOR_OUTPUT_MS).then(() => false),
        ]);
        // SIGKILL to the container's init ends its pid namespace at once, without a `runc kill`
        // to start (tens of ms on a busy host); runc's kill is the fallback.
        if (!grace && !(await killInit(c))) await runtime.kill(c, {}).catch(() => undefined);
        await ended;
        return { exitCode, oomKilled: (await oomKills(mode as CgroupMode, c.cgroupsPath)) > 0 };
      })();
      return { output, done } satisfies Execution;
    },

    async kill(container, ctl) {
      await oci(['kill', '--all', container.id, 'KILL'], ctl).catch((e: unknown) => {
        if (!/not running|does not exist|container not found/i.test(toError(e).message)) throw e;
      });
    },

    destroy: (container, ctl) => destroyById(container.id, ctl),

    async reap(ctl) {
      const ids = new Set<string>();
      const listed = await oci(['list', '--format', 'json'], ctl);
      for (const c of (JSON.parse(listed || 'null') ?? []) as { id: string }[]) ids.add(c.id);
      for (const dir of [...pool.snapshotDirs, pool.bundles]) {
        for (const name of await readdir(dir).catch(() => [] as string[])) ids.add(name);
      }
      const removed: string[] = [];
      for (const id of [...ids].filter((i) => i.startsWith(CONTAINER_PREFIX))) {
        const meta = await readMeta(id);
        if (meta && (await processAlive(meta.owner))) continue;
        // One leftover that will not go must not keep the node from starting: say so and go on.
        try {
          await destroyById(id, ctl);
          removed.push(id);
        } catch (e) {
          o.logger.error(
            { err: toError(e).message, id },
            'could not remove a leftover container; an operator should look',
          );
        }
      }
      if (removed.length) o.logger.info({ removed }, 'removed containers left by processes that are gone');
      await egress
        ?.reap()
        .catch((e: unknown) =>
          o.logger.error({ err: toError(e).message }, 'could not remove leftover job interfaces'),
        );
      // uid ranges whose taker and container are both gone (their pool may be another one).
      for (const [index, holder] of await leases.list()) {
        if (!(await leaseHolderAlive(holder))) await leases.release(index, holder.id);
      }
      await destroyStaleQgroups(o.poolPath);
      return removed;
    },

    imagesInUse: () => imagesInUseOn(o.poolPath),
  };
  return runtime;
}

function abortIfNeeded(ctl: RuntimeCtl, what: string): void {
  if (ctl.signal?.aborted) throw new AbortedError(what, ctl.signal.reason);
  if (ctl.deadline !== undefined && Date.now() > ctl.deadline)
    throw new AbortedError(what, new Error('deadline passed'));
}

function remaining(ctl: RuntimeCtl, fallbackMs: number): number {
  return ctl.deadline === undefined ? fallbackMs : Math.max(1, ctl.deadline - Date.now());
}

const rand = () => randomBytes(5).toString('hex');
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

/** Start time of a process in clock ticks since boot; '' when it is gone. */
async function processStart(pid: number): Promise<string> {
  return (await processIdentity(pid))?.start ?? '';
}

/** SIGKILLs the container's init if it is still the process it was; false when it could not. */
async function killInit(c: RuncContainer): Promise<boolean> {
  if ((await processStart(c.initPid)) !== c.initStart) return false;
  try {
    process.kill(c.initPid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
}

/**
 * The exit status the exec wrapper writes on its fd 3 (`<code>\n`) before it exits; undefined when
 * the FIFO ends without one (the wrapper was killed). At most a few bytes are kept.
 */
async function readStatus(s: Socket): Promise<number | undefined> {
  let text = '';
  s.on('data', (d: Buffer) => {
    if (text.length < 16) text += d.toString('latin1');
  });
  await once(s, 'end').catch(() => undefined);
  s.destroy();
  const m = /^(\d{1,3})\n$/.exec(text);
  return m && Number(m[1]) <= 255 ? Number(m[1]) : undefined;
}

async function lastRuncError(logFile: string): Promise<string> {
  const text = await readFile(logFile, 'utf8').catch(() => '');
  const errors = text
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      try {
        return JSON.parse(l) as { level?: string; msg?: string };
      } catch {
        return { level: 'error', msg: l };
      }
    })
    .filter((l) => l.level === 'error');
  return errors.at(-1)?.msg ?? '';
}

/** Quota groups of deleted snapshots stay behind as `<stale>`; remove them so accounting stays small. */
async function destroyStaleQgroups(poolPath: string): Promise<void> {
  const out = await runCommand('btrfs', ['qgroup', 'show', poolPath]).catch(() => '');
  for (const line of out.split('\n')) {
    const m = line.match(/^(0\/\d+)\s.*<stale>/);
    if (m?.[1]) await runCommand('btrfs', ['qgroup', 'destroy', m[1], poolPath]).catch(() => undefined);
  }
}

/**
 * What the host's own apt needs for its mirror (a dated snapshot has expired Release files):
 * `Acquire::Check-Valid-Until` and `Acquire::Check-Date` when the host turns them off.
 */
async function hostAptSettings(): Promise<string[]> {
  const out = await runCommand('apt-config', ['dump']).catch(() => '');
  const lines: string[] = [];
  for (const key of ['Acquire::Check-Valid-Until', 'Acquire::Check-Date']) {
    if (new RegExp(`^${key} "(false|0|no)";$`, 'm').test(out)) lines.push(`${key} "false";`);
  }
  return lines;
}

/** Shell-safe text of the apt hook that tells a job without network why apt cannot work. */
const NO_NETWORK_MESSAGE =
  'archway: this job has no network (network: none), so apt cannot reach a mirror. Ask for it with network: egress (archway submit --network egress; builds from a repository have it unless the operator turned egress off)';

/**
 * Files the host writes into a container before it starts, by network mode: the resolver (the
 * host's DNS forwarder for egress, none otherwise) and, in Debian images, apt's settings: the
 * host's package cache as proxy for egress; an update hook that fails at once, saying why, without.
 */
export async function writeNetworkFiles(
  rootfs: string,
  network: NetworkMode,
  o: { owner: number; nameserver?: string; aptProxy?: string; aptSettings: readonly string[] },
): Promise<void> {
  const etc = join(rootfs, 'etc');
  if (!(await exists(etc))) return;
  const put = async (path: string, text: string) => {
    // An image's symlink here must not make the host write elsewhere: replace, never follow.
    await rm(path, { force: true });
    await writeFile(path, text, { mode: 0o644, flag: 'wx' });
    await lchown(path, o.owner, o.owner);
  };
  await put(
    join(etc, 'resolv.conf'),
    network === 'egress' && o.nameserver ? `nameserver ${o.nameserver}\n` : '',
  );
  const aptDir = join(etc, 'apt', 'apt.conf.d');
  if (!(await exists(aptDir))) return;
  const conf =
    network === 'egress'
      ? [
          "// Written by archway: this host's package cache, used by every egress job.",
          ...(o.aptProxy ? [`Acquire::http::Proxy "${o.aptProxy}";`] : []),
          // A mirror that cannot be reached fails `apt-get update` (by default only a warning, exit 0).
          'APT::Update::Error-Mode "any";',
          ...o.aptSettings,
        ]
      : [
          '// Written by archway: this job has no network.',
          // apt retries with a growing delay (7 s in all) before it gives up: nothing to wait for here.
          'Acquire::Retries "0";',
          `APT::Update::Pre-Invoke { "echo '${NO_NETWORK_MESSAGE}' >&2; exit 100"; };`,
        ];
  await put(join(aptDir, '00archway'), `${conf.join('\n')}\n`);
  // The container is thrown away after its one job: dpkg's fsync per file buys nothing and
  // doubles an install's time (measured in docs/benchmarks.md).
  const dpkgDir = join(etc, 'dpkg', 'dpkg.cfg.d');
  if (await exists(dpkgDir)) await put(join(dpkgDir, '00archway-unsafe-io'), 'force-unsafe-io\n');
}
