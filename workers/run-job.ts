import type { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import { type AttemptOutcome, type CancelState, createLogWriter, type TakenJob } from '../queue/index.ts';
import {
  AbortedError,
  type Arch,
  ArchwayError,
  type EffectiveLimits,
  type EndReason,
  ImageNotFoundError,
  type JobSpec,
  type Keys,
  toError,
} from '../src/core/index.ts';
import type { JobLauncher, LaunchEndReason } from './job-launcher.ts';
import { jobEnv, SCRIPT_ARGV, writeScript } from './job-script.ts';
import { retryDelayMs } from './retry-policy.ts';
import type { SourceFetcher } from './source-fetch.ts';
import { SourceFetchError } from './source-fetch-error.ts';
import { effectiveLimits, limitsNote } from './time-limits.ts';
import type { WorkerEvents } from './worker-events.ts';

/** Why the worker stopped a running job: one of the job's end reasons, or the node shutting down (the job is retried). */
export type StopReason = EndReason | 'shutdown';

/**
 * Where an image is that this node lacks: `overdue`, the catalog's current version, published
 * longer than IMAGE_SYNC_GRACE_MS ago (the node's sync failed: the host's fault); `elsewhere`,
 * published since, or held by another live node (retried, not the host's fault); `nowhere`.
 */
export type MissingImage = 'overdue' | 'elsewhere' | 'nowhere';

/**
 * How long after the catalog publishes a version a node that still lacks it counts that as its
 * own failure: its sync agent follows the catalog's events and reconciles every minute, so a sync
 * that works has long finished, while a job submitted right after a publish must not count
 * against a node that is still receiving the image.
 */
export const IMAGE_SYNC_GRACE_MS = 10 * 60_000;

/** What is known when one attempt is over: the input of classifyAttempt. */
export interface AttemptFacts {
  /** Why the worker stopped the job, when it did (cancel, silence, log limit, node shutdown). */
  stopReason?: StopReason | undefined;
  /** The job's process ran and ended: its exit code and the launcher's reason (timeout, oom, canceled). */
  exit?: { exitCode: number; reason?: LaunchEndReason | undefined } | undefined;
  /** The attempt failed before or around the job's process: launch, image, source, runtime. */
  error?: Error | undefined;
  /** For an image this node lacks: where it is (see MissingImage). */
  missingImage?: MissingImage | undefined;
  /** No attempt follows this one should it error. */
  lastAttempt: boolean;
}

/**
 * How the attempt bears on the node: `failed` counts toward quarantine (the host failed it),
 * `fine` clears the count (the host did its part), `unknown` leaves it (stopped by a shutdown or
 * a cancel before anything ran).
 */
export type HostVerdict = 'failed' | 'fine' | 'unknown';

export type AttemptVerdict =
  | {
      state: 'passed' | 'failed' | 'canceled';
      reason?: EndReason;
      exitCode?: number;
      /** The job's own mistake that kept it from running: shown in its log and on its attempt. */
      error?: string;
      host: HostVerdict;
    }
  | {
      state: 'errored';
      error: string;
      /** Whether another attempt follows (elsewhere, or here after a back-off). */
      retry: boolean;
      host: HostVerdict;
    };

/**
 * The outcome of one attempt, from what happened (docs/architecture.md, "Whose failure an
 * attempt is"): the
 * job's exit or stop reason; a failure of the job's own spec (`bad_spec`, `source`), which fails
 * it and never counts against the node; or a failure of the host, which errors the attempt, is
 * retried while attempts are left, and counts toward quarantine. Pure: unit-tested without Redis or root.
 */
export function classifyAttempt(f: AttemptFacts): AttemptVerdict {
  if (f.stopReason === 'shutdown')
    return { state: 'errored', error: 'the node was stopped', retry: !f.lastAttempt, host: 'unknown' };
  if (f.exit) {
    const reason = f.stopReason ?? f.exit.reason;
    const state =
      reason === 'canceled' || reason === 'superseded'
        ? 'canceled'
        : reason === undefined && f.exit.exitCode === 0
          ? 'passed'
          : 'failed';
    return { state, exitCode: f.exit.exitCode, ...(reason ? { reason } : {}), host: 'fine' };
  }
  const err = f.error ?? new Error('the attempt ended without an exit code');
  if (f.stopReason === 'canceled' || f.stopReason === 'superseded')
    // Canceled before the job's process started (while its container was being made).
    return { state: 'canceled', reason: f.stopReason, host: 'unknown' };
  if (f.stopReason === undefined) {
    if (err instanceof ImageNotFoundError) {
      // Nobody holds it (a typo, a version gone from every node): the job's own mistake.
      if (f.missingImage === undefined || f.missingImage === 'nowhere')
        return { state: 'failed', reason: 'bad_spec', error: err.message, host: 'fine' };
      // Held elsewhere or on its way here: retried; the host's fault only when its sync is overdue.
      return {
        state: 'errored',
        error: err.message,
        retry: !f.lastAttempt,
        host: f.missingImage === 'overdue' ? 'failed' : 'unknown',
      };
    }
    if (err instanceof SourceFetchError) {
      // A git server that is down may come back: retried, but never the host's fault (it cannot
      // tell a missing repository from an unreachable one without reading git's messages).
      if (err.infra && !f.lastAttempt)
        return { state: 'errored', error: err.message, retry: true, host: 'unknown' };
      return { state: 'failed', reason: 'source', error: err.message, host: 'fine' };
    }
    if (err instanceof ArchwayError && !err.infra && !(err instanceof AbortedError))
      // Limits over this node's ceilings, a bad env: another node would refuse it the same way.
      return { state: 'failed', reason: 'bad_spec', error: err.message, host: 'fine' };
  }
  const retryable = !(err instanceof ArchwayError) || err.infra;
  return { state: 'errored', error: err.message, retry: retryable && !f.lastAttempt, host: 'failed' };
}

export interface JobRunnerOptions {
  nodeId: string;
  arch: Arch;
  launcher: JobLauncher;
  /** For the log streams. */
  redis: Redis;
  keys: Keys;
  /** Bytes of output kept per job. */
  logLimitBytes: number;
  logRetentionSeconds: number;
  /** Fetches a job's `source` and places it in its container. Without one, a job with a source errors. */
  source?: SourceFetcher | undefined;
  events: EventEmitter<WorkerEvents>;
  /** The job's cancel flag, read when its attempt starts (a cancel may have come while it was taken). */
  cancelState: (id: string) => Promise<CancelState>;
  /** Where an image is that this node lacks (the catalog, another live node, nowhere). */
  whereIsImage: (image: string) => Promise<MissingImage>;
  /** Live nodes of the arch, other than this one, that take jobs (where a retry can go at once). */
  otherLiveNodes: () => Promise<number>;
  /** This arch's factor of ARCHWAY_TIME_MULTIPLIERS: jobs' time and silence limits are multiplied by it. Default 1. */
  timeMultiplier?: number;
}

/** One attempt's result: the consumer's outcome, and what it says about the host. */
export interface RunResult {
  outcome: AttemptOutcome;
  host: HostVerdict;
  /** The error, when the attempt errored or could not run. */
  error?: string;
}

export interface JobRunner {
  /** Runs one attempt in a container: launch, the job's output into its log, its end line. Never throws. */
  run(job: TakenJob, signal: AbortSignal): Promise<RunResult>;
  /** Stops a running job with a reason (no effect on one this node does not run). */
  stop(id: string, reason: StopReason): void;
  /** Ids of the jobs running now. */
  readonly running: readonly string[];
}

/** Runs the attempts of one node: a job's container, its silence timeout, its log and how it ended. */
export function createJobRunner(o: JobRunnerOptions): JobRunner {
  const stops = new Map<string, (reason: StopReason) => void>();
  const rt = o.launcher.runtime;

  async function run(taken: TakenJob, signal: AbortSignal): Promise<RunResult> {
    const { id, attempt } = taken;
    const spec = taken.record.spec;
    const limits = effectiveLimits(spec, o.timeMultiplier ?? 1);
    const ctl = new AbortController();
    let stopReason: StopReason | undefined;
    const stop = (reason: StopReason) => {
      stopReason ??= reason;
      ctl.abort(new Error(reason));
    };
    stops.set(id, stop);
    o.events.emit('job:start', {
      id,
      attempt,
      waitMs: Math.max(0, Date.now() - taken.enqueuedAtMs),
      busy: stops.size,
    });
    signal.addEventListener('abort', () => stop('shutdown'), { once: true });
    const writer = createLogWriter({
      redis: o.redis,
      keys: o.keys,
      jobId: id,
      // A re-run of this job elsewhere (this node lost, partitioned) fences this attempt's output out.
      attempt,
      limitBytes: o.logLimitBytes,
      secrets: Object.values(spec.secrets),
      onLimit: () => stop('log_limit'),
    });
    let silence: NodeJS.Timeout | undefined;
    // Once per read of the job's output (tens of thousands for a fast job): restart the one timer
    // rather than make a new one each time.
    const armSilence = () => {
      if (silence) silence.refresh();
      else silence = setTimeout(() => stop('silence'), limits.silenceTimeoutSeconds * 1000);
    };
    const facts: AttemptFacts = { lastAttempt: taken.lastAttempt };
    try {
      if (taken.record.cancelRequested) {
        const c = await o.cancelState(id);
        stop(c.requested ? c.reason : 'canceled');
      }
      const source = spec.source;
      const fetcher = o.source;
      if (source && !fetcher)
        throw new ArchwayError('SOURCE_UNSUPPORTED', `node ${o.nodeId} does not fetch sources`, {
          infra: true,
        });
      let sourceNote = '';
      // On the record before the job runs: `job show` says which limits it runs under.
      await taken.update({ effectiveLimits: limits }).catch(() => false);
      const t0 = Date.now();
      const job = await o.launcher.launch(
        {
          jobId: id,
          image: spec.image,
          argv: SCRIPT_ARGV,
          env: jobEnv(spec, { jobId: id, attempt, node: o.nodeId }),
          cwd: source && fetcher ? fetcher.buildDirOf(source) : '/root',
          prepare: async (rootfs: string, sig: AbortSignal, idBase: number) => {
            await writeScript(rootfs, spec.script);
            if (!source || !fetcher) return;
            const p = await fetcher.place({ jobId: id, source, rootfs, idBase, signal: sig });
            sourceNote = `[archway] source ${source.git} at ${p.sha}: ${p.mirrorHit ? "in this host's mirror" : `fetched in ${p.fetchMs} ms`}, placed at ${p.buildDir} in ${p.placeMs} ms\n`;
          },
          limits: spec.resources,
          network: spec.network,
          timeoutSeconds: limits.timeoutSeconds,
        },
        { signal: ctl.signal },
      );
      armSilence();
      o.events.emit('container:launch', { id, warm: job.warm, ms: Date.now() - t0 });
      await taken.update({ imageDigest: job.image.digest }).catch(() => false);
      await writer.note(
        `${attempt > 1 ? `\n[archway] --- attempt ${attempt} ---\n` : ''}` +
          `[archway] job ${id} on node ${o.nodeId}: ${o.arch}, ${rt.emulated ? `emulated (qemu-user on ${hostname()})` : 'native'}\n` +
          `[archway] image ${job.image.name}@${job.image.digest}\n` +
          `[archway] ${job.warm ? 'warm' : 'cold'} container, launched in ${Date.now() - t0} ms\n` +
          limitsNote(spec, limits, { arch: o.arch, emulated: rt.emulated }) +
          `[archway] network: ${spec.network === 'egress' ? "egress (outbound only; apt uses this host's package cache)" : 'none (only loopback: no DNS, no downloads; ask for network: egress)'}\n` +
          sourceNote,
      );
      // Each read of the job's output in place (one buffer for all of them): the writer copies it.
      const output = job.output;
      await output.drain((data) => {
        armSilence();
        o.events.emit('log:write', { id, bytes: data.length });
        if (writer.push(data)) return true;
        void writer.ready().then(() => output.resume());
        return false;
      });
      const result = await job.result;
      facts.exit = { exitCode: result.exitCode, reason: result.reason };
    } catch (e) {
      facts.error = toError(e);
      if (facts.error instanceof ImageNotFoundError && stopReason === undefined)
        // Unknown (Redis away): retried, and not counted against the node.
        facts.missingImage = await o.whereIsImage(spec.image).catch((): MissingImage => 'elsewhere');
    } finally {
      clearTimeout(silence);
      stops.delete(id);
      o.events.emit('slot:free', { id, busy: stops.size });
    }
    facts.stopReason = stopReason;
    const v = classifyAttempt(facts);
    const end = async () => {
      await writer.end(o.logRetentionSeconds);
    };
    if (v.state !== 'errored') {
      await writer.note(
        v.error !== undefined
          ? `\n[archway] the job cannot run: ${v.error}\n`
          : v.exitCode === undefined
            ? '[archway] canceled before it started\n'
            : endLine(v.reason, v.exitCode, spec, { ...limits, arch: o.arch }),
      );
      o.events.emit('job:end', { id, state: v.state, reason: v.reason });
      return {
        outcome: {
          state: v.state,
          ...(v.exitCode === undefined ? {} : { exitCode: v.exitCode }),
          ...(v.reason ? { reason: v.reason } : {}),
          ...(v.error === undefined ? {} : { error: v.error }),
          logBytes: writer.bytes,
          onRecorded: end,
        },
        host: v.host,
        ...(v.error === undefined ? {} : { error: v.error }),
      };
    }
    await writer.note(
      `\n[archway] attempt ${attempt} errored on node ${o.nodeId}: ${v.error}\n${v.retry ? '[archway] the job goes back to the queue\n' : ''}`,
    );
    o.events.emit('attempt:error', { id, attempt, error: v.error, retry: v.retry });
    if (!v.retry)
      return {
        outcome: { state: 'errored', error: v.error, logBytes: writer.bytes, onRecorded: end },
        host: v.host,
        error: v.error,
      };
    // To another live node at once; with none, back to this one after a back-off that grows.
    const delay = retryDelayMs(attempt, await o.otherLiveNodes());
    if (delay > 0)
      await writer.note(
        `[archway] no other node of ${o.arch} is live: the retry waits ${Math.round(delay / 1000)} s\n`,
      );
    return {
      outcome: { state: 'errored', error: v.error, retryDelayMs: delay, logBytes: writer.bytes },
      host: v.host,
      error: v.error,
    };
  }

  return {
    run,
    stop: (id, reason) => stops.get(id)?.(reason),
    get running() {
      return [...stops.keys()];
    },
  };
}

/** The log's last line for a job whose process ran: how it ended, in the user's words. */
export function endLine(
  reason: EndReason | undefined,
  exitCode: number,
  spec: Pick<JobSpec, 'timeoutSeconds' | 'silenceTimeoutSeconds'> & {
    resources: { memoryMiB?: number | undefined };
  },
  /** The limits the node applied, when its arch scales them (ARCHWAY_TIME_MULTIPLIERS). */
  scaled?: EffectiveLimits & { arch: Arch },
): string {
  const by = (effective: number, asked: number) =>
    scaled && scaled.multiplier !== 1
      ? `${effective} s (${asked} s x${scaled.multiplier} on ${scaled.arch})`
      : `${asked} s`;
  switch (reason) {
    case undefined:
      return `\n[archway] exited with ${exitCode}\n`;
    case 'timeout':
      return `\n[archway] stopped: the job ran longer than its time limit of ${by(scaled?.timeoutSeconds ?? spec.timeoutSeconds, spec.timeoutSeconds)}\n`;
    case 'silence':
      return `\n[archway] stopped: no output for ${by(scaled?.silenceTimeoutSeconds ?? spec.silenceTimeoutSeconds, spec.silenceTimeoutSeconds)}\n`;
    case 'log_limit':
      return '\n[archway] stopped: the log reached its size limit\n';
    case 'oom':
      return `\n[archway] killed: out of memory (limit ${spec.resources.memoryMiB ?? 'default'} MiB)\n`;
    case 'canceled':
      return '\n[archway] canceled\n';
    case 'superseded':
      return '\n[archway] canceled: superseded by a newer build\n';
    case 'infra':
      return '\n[archway] stopped: host error\n';
    case 'bad_spec':
    case 'source':
      return `\n[archway] the job cannot run (${reason})\n`;
    default: {
      const never: never = reason;
      return `\n[archway] ended: ${String(never)}\n`;
    }
  }
}
