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
  createJobLauncher,
  type JobLauncher,
  type JobLauncherOptions,
  type JobOutcome,
  type LaunchedJob,
  type LaunchRequest,
} from './job-launcher.ts';
export { jobEnv, scriptArgv, shellQuote } from './job-script.ts';
export { type RunWorkerOptions, runWorker } from './run-worker.ts';
export {
  CONTAINER_PREFIX,
  createRuncRuntime,
  type RuncRuntimeOptions,
  runtimeOptionsFrom,
} from './runc-runtime.ts';
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
export { createWorkerDaemon, type WorkerDaemon, type WorkerDaemonOptions } from './worker-daemon.ts';
