import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { closeSync, constants, openSync } from 'node:fs';
import { access, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { Socket } from 'node:net';
import { constants as osConstants } from 'node:os';
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
  HOST_ENV,
  HostCommandError,
  type HostConfig,
  HostRequirementError,
  hasCommand,
  InvalidInputError,
  type Limits,
  type Logger,
  limitExclusive,
  oomKills,
  processAlive,
  processIdentity,
  runCommand,
  snapshotSubvolume,
  toError,
} from '../src/index.ts';
import type { Container, ContainerRuntime, ExecResult, Execution, RuntimeCtl } from './container-runtime.ts';
import { createOciSpec, createProcessSpec, ociResources } from './oci-spec.ts';
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
const GRACE_FOR_OUTPUT_MS = 100;

interface Owner {
  pid: number;
  /** Start time of the process in clock ticks since boot (/proc/PID/stat field 22): tells a reused pid apart. */
  start: string;
}

interface ContainerMeta {
  owner: Owner;
  image: { name: string; arch: Arch; digest: string };
  jobId?: string;
  createdAt: string;
  /** The uid range leased to the container (released once its processes are gone). */
  uidRange?: number;
}

interface RuncContainer extends Container {
  readonly initPid: number;
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
  const leases = createHostLeases({ dir: o.idLeaseDir, size: o.idRanges });
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
  const stateRoot = join(o.runDir, ociRuntime);
  await mkdir(stateRoot, { recursive: true, mode: 0o700 });
  const me: Owner = { pid: process.pid, start: await processStart(process.pid) };
  const bundleOf = (id: string) => join(o.poolPath, 'bundles', id);
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
    for (const dir of ['warm', 'jobs']) {
      const path = join(o.poolPath, dir, id);
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

  const readMeta = (id: string) =>
    readFile(join(bundleOf(id), 'meta.json'), 'utf8')
      .then((t) => JSON.parse(t) as ContainerMeta)
      .catch(() => undefined);

  const rootfsOf = (c: { id: string }) =>
    join(o.poolPath, c.id.startsWith(`${CONTAINER_PREFIX}warm-`) ? 'warm' : 'jobs', c.id);

  const runtime: ContainerRuntime = {
    arch: o.arch,
    emulated: support.emulated,
    ociRuntime,

    async prepare(image: ResolvedImage, limits: Limits, ctl: RuntimeCtl & { jobId?: string }) {
      abortIfNeeded(ctl, 'prepare');
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
          limitExclusive(rootfs, limits.diskMiB * 1024 * 1024, { timeoutMs: remaining(ctl, 10_000) }),
          runCommand('mkfifo', ['-m', '0600', join(bundle, 'output.fifo')]),
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
                network: 'none',
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
        // The lease outlives this process while the container runs (an orphan keeps its range).
        await Promise.all([
          processIdentity(initPid).then((init) =>
            init ? leases.update(index, { id, owner: me, init }) : undefined,
          ),
          limitUcounts(initPid, o.ucounts, remaining(ctl, 10_000)),
        ]);
        abortIfNeeded(ctl, 'prepare');
        const c: RuncContainer = {
          id,
          image,
          limits,
          readyAt: Date.now(),
          rootfs,
          idBase: range.hostId,
          initPid,
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
      ]);
      abortIfNeeded(ctl, 'exec');
      // One FIFO for both stdout and stderr: the kernel keeps the two in the order they were written.
      const fifo = join(bundle, 'output.fifo');
      const readFd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
      const writeFd = openSync(fifo, constants.O_WRONLY);
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
          '--process',
          processFile,
          c.id,
        ],
        {
          env: HOST_ENV,
          stdio: ['ignore', writeFd, writeFd],
        },
      );
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
        proc.once('exit', (code, signal) => resolve({ code, signal }));
        proc.once('error', () => resolve({ code: 255, signal: null }));
      });
      closeSync(writeFd);
      const output = new Socket({ fd: readFd, readable: true, writable: false });
      const ended = once(output, 'end').then(
        () => undefined,
        () => undefined,
      );
      const done = (async (): Promise<ExecResult> => {
        const r = await exited;
        let exitCode = r.code ?? (r.signal ? 128 + signalNumber(r.signal) : 255);
        // Processes the job left in the background still hold the pipe: the job is over, so end them.
        const grace = await Promise.race([
          ended.then(() => true),
          sleep(GRACE_FOR_OUTPUT_MS).then(() => false),
        ]);
        if (!grace) await runtime.kill(c, {}).catch(() => undefined);
        await ended;
        if (exitCode === 255) {
          const err = await lastRuncError(execLog);
          if (/executable file not found|no such file or directory/i.test(err)) exitCode = 127;
          else if (err) throw new HostCommandError(`${ociRuntime} exec`, 255, err);
        }
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
      for (const dir of ['warm', 'jobs', 'bundles']) {
        for (const name of await readdir(join(o.poolPath, dir)).catch(() => [] as string[])) ids.add(name);
      }
      const removed: string[] = [];
      for (const id of [...ids].filter((i) => i.startsWith(CONTAINER_PREFIX))) {
        const meta = await readMeta(id);
        if (meta && (await isAlive(meta.owner))) continue;
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
      // uid ranges whose taker and container are both gone (their pool may be another one).
      for (const [index, holder] of await leases.list()) {
        const alive =
          (await processAlive(holder.owner)) || (holder.init ? await processAlive(holder.init) : false);
        if (!alive) await leases.release(index, holder.id);
      }
      await destroyStaleQgroups(o.poolPath);
      return removed;
    },

    async imagesInUse() {
      // Every container's record is written before its snapshot is made, so one being made counts too.
      const digests = new Set<string>();
      for (const id of await readdir(join(o.poolPath, 'bundles')).catch(() => [] as string[])) {
        const meta = await readFile(join(bundleOf(id), 'meta.json'), 'utf8')
          .then((t) => JSON.parse(t) as ContainerMeta)
          .catch(() => undefined);
        if (meta?.image.digest) digests.add(meta.image.digest);
      }
      return digests;
    },
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

async function exists(p: string): Promise<boolean> {
  return access(p).then(
    () => true,
    () => false,
  );
}

async function processStart(pid: number): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
}

async function isAlive(owner: Owner): Promise<boolean> {
  try {
    return (await processStart(owner.pid)) === owner.start;
  } catch {
    return false;
  }
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

function signalNumber(sig: string): number {
  return (osConstants.signals as Record<string, number>)[sig] ?? 0;
}

/** Quota groups of deleted snapshots stay behind as `<stale>`; remove them so accounting stays small. */
async function destroyStaleQgroups(poolPath: string): Promise<void> {
  const out = await runCommand('btrfs', ['qgroup', 'show', poolPath]).catch(() => '');
  for (const line of out.split('\n')) {
    const m = line.match(/^(0\/\d+)\s.*<stale>/);
    if (m?.[1]) await runCommand('btrfs', ['qgroup', 'destroy', m[1], poolPath]).catch(() => undefined);
  }
}
