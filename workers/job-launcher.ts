import PQueue from 'p-queue';
import type { ImageStore, ResolvedImage } from '../images/index.ts';
import {
  AbortedError,
  type Ceilings,
  checkCeilings,
  DEFAULT_LIMITS,
  InvalidInputError,
  JobId,
  type Limits,
  type Logger,
  limitsWithin,
  type NetworkMode,
  ResourceLimits,
  toError,
} from '../src/core/index.ts';
import type { Container, ContainerRuntime } from './container-runtime.ts';
import type { JobOutput } from './job-output.ts';
import type { WarmPool } from './warm-pool.ts';

export interface LaunchRequest {
  jobId: string;
  /** `name` or `name@sha256:...`, of the runtime's arch. */
  image: string;
  argv: readonly string[];
  env?: Readonly<Record<string, string>>;
  /** Working directory in the container. Default `/`. */
  cwd?: string;
  limits?: ResourceLimits;
  /** `none` (default): only loopback. `egress`: outbound network, ready before the job starts. */
  network?: NetworkMode;
  /** Wall-clock limit of the job's process, in seconds. Default: none (the caller enforces its own). */
  timeoutSeconds?: number;
  /**
   * Runs on the host once the job has its container and before its process starts, with the
   * host path of the container's root filesystem: where the worker places the job's source. `idBase`
   * is the host uid/gid of the container's root: what placed files must be owned by. When it
   * throws, the container is destroyed and launch() throws that error.
   */
  prepare?: (rootfs: string, signal: AbortSignal, idBase: number) => Promise<void>;
}

/** How long after a job's timeout its container is killed when the launcher's process is gone. */
export const ORPHAN_KILL_AFTER_MS = 2_000;

export type LaunchEndReason = 'timeout' | 'oom' | 'canceled';

export interface JobOutcome {
  exitCode: number;
  /** Set when the job did not simply exit. */
  reason?: LaunchEndReason;
  /** From the exec to its last output byte. */
  durationMs: number;
}

export interface LaunchedJob {
  readonly jobId: string;
  readonly image: ResolvedImage;
  /** True when the job got a warm container, false when it waited for a cold one. */
  readonly warm: boolean;
  readonly emulated: boolean;
  /** Milliseconds from launch() to the job's process being started. */
  readonly launchMs: number;
  /** stdout and stderr merged in order. Must be consumed: a full pipe blocks the job. */
  readonly output: JobOutput;
  /** Settles after the last output byte; the container is then destroyed in the background. */
  readonly result: Promise<JobOutcome>;
  /** Ends the job (reason `canceled`). */
  cancel(): void;
}

export interface JobLauncherOptions {
  runtime: ContainerRuntime;
  images: ImageStore;
  /** Warm containers to take from; without one every launch is cold. */
  warmPool?: WarmPool;
  /**
   * This host's ceilings (hostCeilings): a launch over one is refused with an InvalidInputError
   * naming the limit, and a job that asks for nothing gets the defaults lowered to them.
   * Default: the schema's maxima only.
   */
  ceilings?: Ceilings;
  logger: Logger;
}

export interface JobLauncher {
  readonly runtime: ContainerRuntime;
  /** Starts a job's process in a warm container, or a cold one when none is ready. */
  launch(req: LaunchRequest, opts?: { signal?: AbortSignal }): Promise<LaunchedJob>;
  /** Waits for every used container to be destroyed, then closes the warm pool. Idempotent. */
  close(): Promise<void>;
}

/** Runs jobs on one runtime: takes a container, execs the job, enforces its time, destroys the container. */
export function createJobLauncher(o: JobLauncherOptions): JobLauncher {
  const destroyer = new PQueue({ concurrency: 2 });
  /** Jobs started and not yet finished: close() ends them, so no container outlives the launcher. */
  const active = new Set<{ end: () => void; output: JobOutput; result: Promise<unknown> }>();
  let closed: Promise<void> | undefined;

  const reclaim = (c: Container) =>
    void destroyer.add(() =>
      o.runtime
        .destroy(c, {})
        .catch((err: unknown) =>
          o.logger.error({ err: toError(err), id: c.id }, 'destroying a container failed'),
        ),
    );

  /** Closes with close(): a launch still making its container is aborted, and none starts after. */
  const closing = new AbortController();
  /** Launches not yet returned: close() waits for them, so none adds a job after it looked. */
  const launching = new Set<Promise<unknown>>();

  async function launchOne(req: LaunchRequest, opts: { signal?: AbortSignal }): Promise<LaunchedJob> {
    const started = performance.now();
    const limits = validate(req, o.ceilings);
    const image = await o.images.resolve(req.image, o.runtime.arch);
    const cancel = new AbortController();
    const signal = AbortSignal.any([...(opts.signal ? [opts.signal] : []), cancel.signal, closing.signal]);
    const network = req.network ?? 'none';
    const taken = o.warmPool?.take(image, network);
    const container =
      taken ?? (await o.runtime.prepare(image, limits, { signal, jobId: req.jobId, network }));
    let execution: Awaited<ReturnType<ContainerRuntime['exec']>>;
    try {
      if (req.prepare) await req.prepare(container.rootfs, signal, container.idBase);
      execution = await o.runtime.exec(
        container,
        {
          jobId: req.jobId,
          argv: req.argv,
          env: req.env ?? {},
          cwd: req.cwd ?? '/',
          limits,
          // A little after this launcher's own timer, which ends the job with its reason first.
          ...(req.timeoutSeconds
            ? { killAt: Date.now() + req.timeoutSeconds * 1000 + ORPHAN_KILL_AFTER_MS }
            : {}),
        },
        { signal },
      );
    } catch (e) {
      reclaim(container);
      if (signal.aborted) throw new AbortedError(`job ${req.jobId}`, signal.reason);
      throw e;
    }
    const execAt = performance.now();
    let reason: LaunchEndReason | undefined;
    const end = (why: LaunchEndReason) => {
      reason ??= why;
      o.runtime
        .kill(container, {})
        .catch((err: unknown) => o.logger.error({ err: toError(err), id: container.id }, 'kill failed'));
    };
    const onAbort = () => end('canceled');
    signal.addEventListener('abort', onAbort, { once: true });
    if (signal.aborted) onAbort();
    const timer = req.timeoutSeconds
      ? setTimeout(() => end('timeout'), req.timeoutSeconds * 1000)
      : undefined;
    const result = execution.done
      .then(
        (r): JobOutcome => {
          const why = reason ?? (r.oomKilled ? 'oom' : undefined);
          return {
            exitCode: r.exitCode,
            ...(why ? { reason: why } : {}),
            durationMs: Math.round(performance.now() - execAt),
          };
        },
        (e: unknown): JobOutcome => {
          // Killed while runc was still starting the process: runc reports that as its own failure.
          if (reason) return { exitCode: 137, reason, durationMs: Math.round(performance.now() - execAt) };
          throw e;
        },
      )
      .finally(() => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        reclaim(container);
      });
    const entry = { end: () => end('canceled'), output: execution.output, result };
    active.add(entry);
    void result.then(
      () => active.delete(entry),
      () => active.delete(entry),
    );
    return {
      jobId: req.jobId,
      image,
      warm: taken !== undefined,
      emulated: o.runtime.emulated,
      launchMs: Math.round(execAt - started),
      output: execution.output,
      result,
      cancel: () => cancel.abort(new Error('canceled')),
    };
  }

  return {
    runtime: o.runtime,
    launch(req, opts = {}) {
      if (closing.signal.aborted)
        return Promise.reject(new AbortedError(`job ${req.jobId}`, closing.signal.reason));
      const p = launchOne(req, opts);
      launching.add(p);
      void p.then(
        () => launching.delete(p),
        () => launching.delete(p),
      );
      return p;
    },
    close() {
      closed ??= (async () => {
        // Order: stop launches (one making its container is aborted and removes it; issue 14: a
        // launch after close left its container behind), end running jobs (draining output
        // nobody reads, so they can finish), then the warm pool, then wait for every used
        // container to be destroyed.
        closing.abort(new Error('the launcher is closed'));
        await Promise.allSettled([...launching]);
        for (const job of active) {
          job.end();
          job.output.resume();
        }
        await Promise.allSettled([...active].map((j) => j.result));
        await o.warmPool?.close();
        await destroyer.onIdle();
      })();
      return closed;
    },
  };
}

function validate(req: LaunchRequest, ceilings: Ceilings | undefined): Limits {
  const id = JobId.safeParse(req.jobId);
  if (!id.success) throw new InvalidInputError('jobId', id.error.issues[0]?.message ?? 'invalid');
  if (req.argv.length === 0 || req.argv[0] === '')
    throw new InvalidInputError('argv', 'a command is required');
  const limits = ResourceLimits.safeParse(req.limits ?? {});
  if (!limits.success) {
    const i = limits.error.issues[0];
    throw new InvalidInputError(`limits.${i?.path.join('.') ?? ''}`, i?.message ?? 'invalid');
  }
  if (req.timeoutSeconds !== undefined && !(req.timeoutSeconds > 0)) {
    throw new InvalidInputError(
      'timeoutSeconds',
      `must be a positive number of seconds, got ${req.timeoutSeconds}`,
    );
  }
  if (req.cwd !== undefined && !req.cwd.startsWith('/'))
    throw new InvalidInputError('cwd', 'must be an absolute path');
  const env = Object.keys(req.env ?? {}).find((k) => !/^[A-Za-z_][A-Za-z0-9_]*$/.test(k));
  if (env !== undefined) throw new InvalidInputError(`env.${env}`, 'not a valid variable name');
  // execve takes NUL-terminated strings: a value with a NUL cannot reach the job (JobSpec refuses it at intake).
  const nul = Object.entries(req.env ?? {}).find(([, v]) => v.includes('\0'));
  if (nul) throw new InvalidInputError(`env.${nul[0]}`, 'a value may not contain a NUL byte');
  if (!ceilings) return limitsWithin(limits.data, DEFAULT_LIMITS);
  checkCeilings(limits.data, ceilings, { field: (k) => `limits.${k}`, where: "this node's" });
  return limitsWithin(limits.data, ceilings);
}
