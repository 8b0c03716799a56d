import { createHash } from 'node:crypto';
import { FINAL_STATES, type JobState } from '../src/core/index.ts';
import type { BuildRecord, BuildSlot } from './build-store.ts';

/*
 * The stage machine of a build, as pure functions of its record (no Redis, no clock): the build
 * store applies them under WATCH, the caller acts on what they return (queue jobs, report).
 * A stage runs when every job of the one before it passed (allowed failures excepted); a failed
 * stage stops the later ones; a re-run of a finished job makes a new generation of its slot.
 */

/** A job's id, fixed before it is submitted (its script and its check run name it). */
export function jobIdOf(buildId: string, n: number, gen: number): string {
  return `j${createHash('sha256').update(`${buildId}\0${n}\0${gen}`).digest('hex').slice(0, 24)}`;
}

const isFinal = (s: { state: string }) => (FINAL_STATES as readonly string[]).includes(s.state);

/** Moves a slot to its next generation: a new job id and a new check run. */
function nextGeneration<J>(b: { id: string }, s: BuildSlot<J>): void {
  s.gen += 1;
  s.jobId = jobIdOf(b.id, s.n, s.gen);
  s.checkKey = `${b.id}-${s.n}-${s.gen}`;
}

/** The build once its first stage's jobs are submitted: running, those slots queued. */
export function startStages<J, E>(build: BuildRecord<J, E>): BuildRecord<J, E> {
  const b = structuredClone(build);
  b.state = 'running';
  for (const s of b.slots) if (s.stageIndex === 0 && s.state === 'waiting') s.state = 'queued';
  return b;
}

/** Records a job's final state in its slot; `undefined` when the job is not the slot's current one or nothing changes. */
export function finishJob<J, E>(
  build: BuildRecord<J, E>,
  jobId: string,
  state: JobState,
): BuildRecord<J, E> | undefined {
  if (!(FINAL_STATES as readonly string[]).includes(state)) return undefined;
  const b = structuredClone(build);
  const slot = b.slots.find((s) => s.jobId === jobId);
  if (!slot || slot.state === state) return undefined;
  slot.state = state;
  return b;
}

/** What advancing a build decided. */
export interface Advance<J, E> {
  build: BuildRecord<J, E>;
  /** Slots of the stage now reached: their jobs are to be submitted. */
  queue: BuildSlot<J>[];
  /** Slots of later stages that will not run (a stage failed). */
  skipped: BuildSlot<J>[];
  /** The stage that failed, when one did. */
  failedStage?: string;
}

/**
 * Decides what follows once the jobs of the current stage have finished: the build fails (a job
 * not allowed to fail did not pass: later stages are skipped), passes (it was the last stage), or
 * the next stage is queued. `undefined` while the stage is still running, or the build is not.
 * With `fastFinish` (Travis's `jobs.fast_finish`), only the jobs not allowed to fail are waited
 * for: the first of them that fails decides the build, and jobs allowed to fail that still run
 * are left to finish. `at` is recorded as `finishedAt` when the build is decided.
 */
export function advance<J, E>(build: BuildRecord<J, E>, at?: string): Advance<J, E> | undefined {
  if (build.state !== 'running') return undefined;
  const b = structuredClone(build);
  const current = b.slots.filter((s) => s.stageIndex === b.currentStage);
  const required = current.filter((s) => !s.allowFailure);
  const failed = (s: BuildSlot<J>) => isFinal(s) && s.state !== 'passed';
  const decided = b.fastFinish ? required.some(failed) || required.every(isFinal) : current.every(isFinal);
  if (!decided) return undefined;
  const ok = !required.some(failed);
  if (!ok) {
    const skipped = b.slots.filter((s) => s.stageIndex > b.currentStage && s.state === 'waiting');
    for (const s of skipped) s.state = 'skipped';
    b.state = 'failed';
    if (at) b.finishedAt = at;
    return { build: b, queue: [], skipped, failedStage: b.stages[b.currentStage] ?? '' };
  }
  if (b.currentStage + 1 >= b.stages.length || !b.slots.some((s) => s.stageIndex > b.currentStage)) {
    b.state = 'passed';
    if (at) b.finishedAt = at;
    return { build: b, queue: [], skipped: [] };
  }
  b.currentStage += 1;
  const queue = b.slots.filter((s) => s.stageIndex === b.currentStage);
  for (const s of queue) {
    // Its check run was concluded when an earlier stage failed: a re-run made the stage pass, so a new one.
    if (s.state === 'skipped') nextGeneration(b, s);
    s.state = 'queued';
  }
  return { build: b, queue, skipped: [] };
}

/**
 * Runs the job `jobId` of a build again: its slot's next generation, queued; a finished build
 * runs again. `undefined` unless the job is the current one of its slot, it has finished, and
 * its stage has been reached.
 */
export function rerun<J, E>(
  build: BuildRecord<J, E>,
  jobId: string,
): { build: BuildRecord<J, E>; slot: BuildSlot<J> } | undefined {
  const b = structuredClone(build);
  const s = b.slots.find((x) => x.jobId === jobId);
  if (!s || !isFinal(s) || s.stageIndex > b.currentStage) return undefined;
  nextGeneration(b, s);
  s.state = 'queued';
  if (b.state === 'failed' || b.state === 'passed') {
    b.state = 'running';
    delete b.finishedAt;
  }
  return { build: b, slot: s };
}

/**
 * Cancels a build that has not finished: `undefined` when it has. `running` lists the slots
 * whose jobs are to be canceled, `waiting` the ones that will never start.
 */
export function cancelStages<J, E>(
  build: BuildRecord<J, E>,
  at?: string,
): { build: BuildRecord<J, E>; running: BuildSlot<J>[]; waiting: BuildSlot<J>[] } | undefined {
  if (build.state === 'passed' || build.state === 'failed' || build.state === 'canceled') return undefined;
  const b = structuredClone(build);
  b.state = 'canceled';
  if (at) b.finishedAt = at;
  return {
    build: b,
    running: b.slots.filter((s) => s.state === 'queued' || s.state === 'running'),
    waiting: b.slots.filter((s) => s.state === 'waiting'),
  };
}

/**
 * Runs a finished build again: every job, or with `failedOnly` those that did not pass (failed,
 * errored, canceled, skipped). Each chosen slot gets its next generation; the build goes back to
 * the first stage that has one and queues that stage's chosen jobs (the others wait for their
 * stage). `undefined` when the build has not finished, or nothing is to run again.
 */
export function restartStages<J, E>(
  build: BuildRecord<J, E>,
  opts: { failedOnly?: boolean } = {},
): { build: BuildRecord<J, E>; queue: BuildSlot<J>[] } | undefined {
  if (build.state !== 'passed' && build.state !== 'failed' && build.state !== 'canceled') return undefined;
  const b = structuredClone(build);
  const chosen = b.slots.filter((s) => (opts.failedOnly ? s.state !== 'passed' : true));
  if (chosen.length === 0) return undefined;
  for (const s of chosen) {
    nextGeneration(b, s);
    s.state = 'waiting';
  }
  b.currentStage = Math.min(...chosen.map((s) => s.stageIndex));
  const queue = chosen.filter((s) => s.stageIndex === b.currentStage);
  for (const s of queue) s.state = 'queued';
  b.state = 'running';
  delete b.finishedAt;
  return { build: b, queue };
}
