/** The worker host runtime: containers from btrfs snapshots, the warm pool, and the job launcher. */
export type {
  Container,
  ContainerRuntime,
  ExecRequest,
  ExecResult,
  Execution,
  RuntimeCtl,
} from './container-runtime.ts';
export {
  createEgressNetwork,
  type EgressNetwork,
  type NetworkAttachment,
  type PackageCacheStats,
  packageCacheStats,
} from './egress-network.ts';
export {
  createJobLauncher,
  type JobLauncher,
  type JobLauncherOptions,
  type JobOutcome,
  type LaunchEndReason,
  type LaunchedJob,
  type LaunchRequest,
} from './job-launcher.ts';
export { JobOutput, type OutputSink } from './job-output.ts';
export {
  jobEnv,
  SCRIPT_ARGV,
  SCRIPT_IN_CONTAINER,
  scriptText,
  writeScript,
} from './job-script.ts';
export {
  createMirrorSweep,
  holdMirror,
  type MirrorInfo,
  type MirrorSweep,
  type MirrorSweepOptions,
} from './mirror-sweep.ts';
export {
  createNodeMembership,
  type NodeMembership,
  type NodeMembershipOptions,
  noteAttempt,
  QUARANTINE_AFTER,
  type QuarantineWindow,
} from './node-membership.ts';
export { CAPABILITIES } from './oci-spec.ts';
export { ORPHAN_WATCH_STEP_S, type OrphanWatchOptions, startOrphanWatch } from './orphan-watch.ts';
export {
  HAND_OFF_MS,
  HAND_OFF_WINDOW_MS,
  type HandOffInputs,
  handOffMs,
  RETRY_BACKOFF_BASE_MS,
  RETRY_BACKOFF_MAX_MS,
  retryBackoffMs,
  retryDelayMs,
} from './retry-policy.ts';
export {
  type AttemptFacts,
  type AttemptVerdict,
  classifyAttempt,
  createJobRunner,
  endLine,
  type HostVerdict,
  type JobRunner,
  type JobRunnerOptions,
  type RunResult,
  type StopReason,
} from './run-job.ts';
export { type RunWorkerOptions, runWorker } from './run-worker.ts';
export {
  CONTAINER_PREFIX,
  createRuncRuntime,
  imagesInUseOn,
  type RuncRuntimeOptions,
  runtimeOptionsFrom,
} from './runc-runtime.ts';
export {
  compileSeccompProfile,
  DEFAULT_SECCOMP_PROFILE,
  loadSeccompProfile,
  type OciSeccomp,
  SeccompProfile,
  seccompFor,
} from './seccomp-profile.ts';
export {
  createSourceFetcher,
  type PlacedSource,
  type SourceFetcher,
  type SourceFetcherOptions,
} from './source-fetch.ts';
export { SourceFetchError } from './source-fetch-error.ts';
export {
  createUserNamespace,
  type IdRangeLayout,
  idRangeLayoutProblem,
  idRangeOf,
  limitUcounts,
  MAX_ID,
  type UcountLimits,
  ucountSysctls,
} from './user-namespace.ts';
export { createWarmPool, type WarmPool, type WarmPoolOptions } from './warm-pool.ts';
export {
  chooseWarmTargets,
  PREFERRED_WARM_IMAGES,
  type WarmTargets,
  type WarmTargetsOptions,
  warmTargetsOf,
} from './warm-targets.ts';
export { createWorkerDaemon, type WorkerDaemon, type WorkerDaemonOptions } from './worker-daemon.ts';
export { recordWorkerMetrics, type WorkerEvents } from './worker-events.ts';
