/** The queue: job records and their state machine, BullMQ queues per arch, log streams, cancellation. */

export {
  type Advance,
  advance,
  cancelStages,
  finishJob,
  jobIdOf,
  rerun,
  restartStages,
  startStages,
} from './build-stages.ts';
export {
  BUILD_TTL_S,
  type BuildRecord,
  type BuildSlot,
  BuildSlotState,
  BuildState,
  type BuildStore,
  type BuildStoreOptions,
  buildRecordSchema,
  type CommitScope,
  createBuildStore,
} from './build-store.ts';
export {
  type Acquired,
  type ConcurrencyLimits,
  candidateGroups,
  createConcurrencyLimits,
  describeGroup,
  type GroupStatus,
  HOLD_RECHECK_MS,
  holdMessage,
  REPO_DEFAULT_GROUP,
  REPO_LABEL,
  SLOT_LEASE_MS,
  SLOT_RENEW_MS,
  type Waiter,
} from './concurrency-limits.ts';
export { type FindImageOptions, findImage, type ImageLookup } from './find-image.ts';
export {
  CATALOG_VERSIONS_KEPT,
  CatalogEntry,
  createImageCatalog,
  ImageBlob,
  type ImageCatalog,
  type ImageEvent,
} from './image-catalog.ts';
export {
  type Admission,
  type AttemptOutcome,
  createJobConsumer,
  type JobConsumer,
  type JobConsumerOptions,
  type JobHandler,
  type TakenJob,
} from './job-consumer.ts';
export {
  createJobEventFollower,
  createJobEvents,
  type EventsPosition,
  JobEvent,
  type JobEventFollower,
  type JobEventFollowerOptions,
  type JobEvents,
} from './job-events.ts';
export {
  createJobQueue,
  IdempotencyConflictError,
  JobFinishedError,
  JobNotFoundError,
  JobNotRestartableError,
  type JobQueue,
  type JobQueueOptions,
  MAX_ATTEMPTS,
  type QueuePlace,
  type SubmitOptions,
} from './job-queue.ts';
export {
  type CancelReason,
  type CancelState,
  createJobStore,
  type JobStore,
  type JobStoreOptions,
  type ListFilter,
  type TransitionOptions,
  type TransitionResult,
} from './job-store.ts';
export { createLease, type Lease, type LeaseOptions } from './lease.ts';
export {
  compareLogIds,
  type LogChunk,
  type LogData,
  type LogPage,
  lastLogId,
  readLog,
  readLogBlocking,
  readLogPage,
} from './log-reader.ts';
export {
  appendLogNote,
  createLogWriter,
  FLUSH_MS,
  type LogWriter,
  type LogWriterOptions,
  MASK,
  MAX_CHUNK_BYTES,
  splitUtf8,
} from './log-writer.ts';
export {
  createNodeRegistry,
  HEARTBEAT_MS,
  HeldImage,
  LOST_AFTER_MS,
  type NodeInfo,
  type NodeRegistry,
  type NodeState,
} from './node-registry.ts';
export { PermanentTaskError } from './permanent-task-error.ts';
export { PoolDisabledError } from './pool-disabled-error.ts';
export {
  createPoolStatus,
  estimateWait,
  type PoolStatus,
  type PoolStatusOptions,
  type PoolStatusReader,
  SCALER_SILENT_MS,
  type WaitBasis,
  type WaitEstimate,
  type WaitInputs,
} from './pool-status.ts';
export {
  createPoolStore,
  POOL_DEFAULTS,
  POOL_LIMITS,
  type Pool,
  type PoolSettings,
  type PoolStore,
  type ScalerReport,
  validatePoolSettings,
} from './pool-store.ts';
export {
  createRetentionSweep,
  type RetentionSweep,
  type RetentionSweepOptions,
  SWEEP_INTERVAL_MS,
} from './retention-sweep.ts';
export {
  compileSecrets,
  createSecretMasker,
  maskSecrets,
  type SecretAutomaton,
  type SecretMasker,
  stripAnsi,
} from './secret-masker.ts';
export {
  createSourceCredentials,
  SourceCredential,
  type SourceCredentials,
} from './source-credentials.ts';
export {
  createStallWatch,
  LOCK_DURATION_MS,
  STALLED_INTERVAL_MS,
  type StallWatch,
  type StallWatchOptions,
} from './stall-watch.ts';
export {
  createTaskQueue,
  type TaskQueue,
  type TaskQueueOptions,
  type TaskResult,
} from './task-queue.ts';
