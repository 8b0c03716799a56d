/** The queue: job records and their state machine, BullMQ queues per arch, log streams, cancellation. */
export {
  createJobQueue,
  IdempotencyConflictError,
  JobFinishedError,
  JobNotFoundError,
  type JobQueue,
  type JobQueueOptions,
  MAX_ATTEMPTS,
  type SubmitOptions,
} from './job-queue.ts';
export {
  createJobStore,
  type JobStore,
  type ListFilter,
  type TransitionOptions,
  type TransitionResult,
} from './job-store.ts';
export { type FollowOptions, followLog, type LogChunk, readLog } from './log-reader.ts';
export {
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
  LOST_AFTER_MS,
  type NodeInfo,
  type NodeRegistry,
  type NodeState,
} from './node-registry.ts';
export {
  createStallWatch,
  LOCK_DURATION_MS,
  STALLED_INTERVAL_MS,
  type StallWatch,
  type StallWatchOptions,
} from './stall-watch.ts';
