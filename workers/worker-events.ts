import type { EventEmitter } from 'node:events';
import type { EndReason, WorkerMetrics } from '../src/core/index.ts';

/** What a node reports as it works (besides its log lines): the one event map of the worker; metrics listen to it. */
export interface WorkerEvents {
  /** An attempt took a slot. `waitMs`: since the job was queued; `busy`: slots in use now. */
  'job:start': [{ id: string; attempt: number; waitMs: number; busy: number }];
  /** The job's process started, in a warm container or a cold one, `ms` after the attempt began. */
  'container:launch': [{ id: string; warm: boolean; ms: number }];
  /** Bytes of the job's output went to its log. */
  'log:write': [{ id: string; bytes: number }];
  /** The job is over (passed, failed or canceled) on this node. */
  'job:end': [{ id: string; state: 'passed' | 'failed' | 'canceled'; reason?: EndReason | undefined }];
  /** The host failed an attempt (or the node stopped it); `retry`: another attempt follows. */
  'attempt:error': [{ id: string; attempt: number; error: string; retry: boolean }];
  /** An attempt left its slot; `busy`: slots in use now. */
  'slot:free': [{ id: string; busy: number }];
  /** The node stopped taking jobs after repeated host failures. */
  'node:quarantine': [{ reason: string }];
}

/** Turns a node's events into its Prometheus figures (its /metrics). */
export function recordWorkerMetrics(
  events: EventEmitter<WorkerEvents>,
  metrics: WorkerMetrics,
  arch: string,
): void {
  events.on('job:start', (e) => {
    // Queue wait of the first attempt: from submission to now.
    if (e.attempt === 1) metrics.queueWait.observe({ arch }, e.waitMs / 1000);
    metrics.running.set({ arch }, e.busy);
  });
  events.on('container:launch', (e) =>
    metrics.launch.observe({ arch, start: e.warm ? 'warm' : 'cold' }, e.ms / 1000),
  );
  events.on('log:write', (e) => metrics.logBytes.inc({ arch }, e.bytes));
  events.on('job:end', (e) => metrics.outcomes.inc({ arch, state: e.state, reason: e.reason ?? '' }));
  // Every errored attempt, retried or not: the rate operators alert on (ops/prometheus).
  events.on('attempt:error', () => metrics.outcomes.inc({ arch, state: 'errored', reason: 'infra' }));
  events.on('slot:free', (e) => metrics.running.set({ arch }, e.busy));
}
