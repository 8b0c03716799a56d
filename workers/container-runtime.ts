import type { ResolvedImage } from '../images/index.ts';
import type { Arch, Limits, NetworkMode } from '../src/core/index.ts';
import type { PackageCacheStats } from './egress-network.ts';
import type { JobOutput } from './job-output.ts';

/**
 * Every runtime call takes one: `signal` cancels it, `deadline` (epoch ms) bounds it. A call that
 * is cancelled or runs out of time removes whatever it had made before it throws.
 */
export interface RuntimeCtl {
  signal?: AbortSignal | undefined;
  deadline?: number | undefined;
}

/** One container: a writable snapshot of one image version, with an idle init running in it. */
export interface Container {
  readonly id: string;
  readonly image: ResolvedImage;
  /** Limits the container was made with; an exec with other limits updates them first. */
  readonly limits: Limits;
  /** Epoch ms when it became ready. */
  readonly readyAt: number;
  /** `none`: only loopback. `egress`: its own veth to the host, outbound only, set up before any job. */
  readonly network: NetworkMode;
  /** Its address on the job network (egress only). */
  readonly address?: string;
  /**
   * Host path of its root filesystem (the writable snapshot). What the host writes there before
   * the exec (the job's source) is what the job sees.
   */
  readonly rootfs: string;
  /**
   * Host uid and gid of the container's root (its uid range's first id): what the host makes the
   * owner of files it places in `rootfs`. No two running containers of a host share it.
   */
  readonly idBase: number;
}

/** The job's process inside a container. */
export interface ExecRequest {
  /** The job id: becomes the container's hostname and is recorded against the container. */
  jobId: string;
  argv: readonly string[];
  env: Readonly<Record<string, string>>;
  /** Working directory inside the container; must exist. */
  cwd: string;
  limits: Limits;
  /**
   * Epoch ms at which the container is killed even if this process is gone by then (a watcher
   * outside it enforces it). Default: none.
   */
  killAt?: number;
}

export interface ExecResult {
  /** The process's exit code; 128 + n when killed by signal n. */
  exitCode: number;
  /** True when the kernel's OOM killer fired in the container's memory cgroup. */
  oomKilled: boolean;
}

export interface Execution {
  /** stdout and stderr merged in the order they were written (one pipe): a Readable, or `drain` for the log writer. */
  readonly output: JobOutput;
  /** Settles after the process exited and all of its output was read. */
  readonly done: Promise<ExecResult>;
}

/** The only seam between archway and the OCI runtime. */
export interface ContainerRuntime {
  readonly arch: Arch;
  /** True when the arch runs through qemu-user on this host. */
  readonly emulated: boolean;
  /** The OCI runtime binary in use. */
  readonly ociRuntime: 'runc' | 'crun';
  /** Whether this runtime can make `egress` containers (the host's job network is set up). */
  readonly egress: boolean;
  /** The host package cache's counters; undefined without egress. */
  packageCacheStats(): Promise<PackageCacheStats | undefined>;
  /**
   * Snapshot the image and start a container idling in the host's static init, with its network
   * (`none` by default) ready. With `jobId` the container is made for that job (a cold start);
   * without, it is a warm container for whichever comes.
   */
  prepare(
    image: ResolvedImage,
    limits: Limits,
    ctl: RuntimeCtl & { jobId?: string; network?: NetworkMode },
  ): Promise<Container>;
  /** Start the job's process in a prepared container. A container takes one exec in its life. */
  exec(container: Container, req: ExecRequest, ctl: RuntimeCtl): Promise<Execution>;
  /** SIGKILL every process in the container (its exec ends with 137). */
  kill(container: Container, ctl: RuntimeCtl): Promise<void>;
  /** Remove the container, its snapshot and its bundle. Idempotent. */
  destroy(container: Container, ctl: RuntimeCtl): Promise<void>;
  /** Destroy every container, snapshot and bundle whose owning process is gone. Returns the ids removed. */
  reap(ctl: RuntimeCtl): Promise<string[]>;
  /**
   * Digests of the image versions that containers on this pool (of any process, warm or running
   * a job, or being made) were made from: the image sync keeps those versions.
   */
  imagesInUse(): Promise<Set<string>>;
}
