import { describe, expect, it } from 'vitest';
import {
  advance,
  type BuildRecord,
  type BuildSlot,
  cancelStages,
  finishJob,
  jobIdOf,
  rerun,
  restartStages,
  startStages,
} from '../../queue/index.ts';

type Slot = BuildSlot<{ name: string }>;
type Build = BuildRecord<{ name: string }, { type: string }>;

const slot = (n: number, stageIndex: number, more: Partial<Slot> = {}): Slot => ({
  n,
  name: `job ${n}`,
  stageIndex,
  allowFailure: false,
  gen: 0,
  jobId: jobIdOf('b1', n, 0),
  checkKey: `b1-${n}-0`,
  state: 'waiting',
  job: { name: `job ${n}` },
  ...more,
});

const build = (slots: Slot[], more: Partial<Build> = {}): Build => ({
  id: 'b1',
  number: 1,
  repo: 'acme/widget',
  repoId: 1,
  installationId: 1,
  sha: 'a'.repeat(40),
  cloneUrl: 'https://github.com/acme/widget.git',
  private: false,
  ref: 'refs/heads/main',
  credential: true,
  autoCancel: true,
  configPath: '.archway.yml',
  stages: [...new Set(slots.map((s) => `stage ${s.stageIndex}`))],
  currentStage: 0,
  state: 'running',
  notes: '',
  createdAt: '2026-01-01T00:00:00.000Z',
  origin: 'api',
  fastFinish: false,
  event: { type: 'push' },
  slots,
  ...more,
});

/** Records every listed job's final state, one after the other. */
const finish = (b: Build, states: Record<number, 'passed' | 'failed' | 'errored' | 'canceled'>): Build => {
  let x = b;
  for (const [n, state] of Object.entries(states)) {
    const id = x.slots.find((s) => s.n === Number(n))?.jobId ?? '';
    x = finishJob(x, id, state) ?? x;
  }
  return x;
};

describe('build stage machine', () => {
  it('starts a build: running, its first stage queued, later stages waiting; the input is not changed', () => {
    const b = build([slot(1, 0), slot(2, 0), slot(3, 1)], { state: 'starting' });
    const s = startStages(b);
    expect(s.state).toBe('running');
    expect(s.slots.map((x) => x.state)).toEqual(['queued', 'queued', 'waiting']);
    expect(b.state).toBe('starting');
    expect(b.slots[0]?.state).toBe('waiting');
  });

  it('waits while a job of the current stage runs', () => {
    const b = finish(startStages(build([slot(1, 0), slot(2, 0), slot(3, 1)])), { 1: 'passed' });
    expect(advance(b)).toBeUndefined();
  });

  it('queues the next stage when every job of this one passed', () => {
    const b = finish(startStages(build([slot(1, 0), slot(2, 0), slot(3, 1)])), { 1: 'passed', 2: 'passed' });
    const a = advance(b);
    expect(a?.build.currentStage).toBe(1);
    expect(a?.queue.map((s) => s.n)).toEqual([3]);
    expect(a?.build.slots[2]?.state).toBe('queued');
    expect(a?.skipped).toEqual([]);
    expect(a?.build.state).toBe('running');
  });

  it('fails the build and skips later stages when a job not allowed to fail did not pass', () => {
    const b = finish(startStages(build([slot(1, 0), slot(2, 0), slot(3, 1), slot(4, 2)])), {
      1: 'passed',
      2: 'failed',
    });
    const a = advance(b);
    expect(a?.build.state).toBe('failed');
    expect(a?.failedStage).toBe('stage 0');
    expect(a?.skipped.map((s) => s.n)).toEqual([3, 4]);
    expect(a?.build.slots.map((s) => s.state)).toEqual(['passed', 'failed', 'skipped', 'skipped']);
    expect(a?.queue).toEqual([]);
  });

  it('lets an allowed failure pass its stage, and passes the build after the last stage', () => {
    const b = finish(startStages(build([slot(1, 0), slot(2, 0, { allowFailure: true })])), {
      1: 'passed',
      2: 'errored',
    });
    const a = advance(b);
    expect(a?.build.state).toBe('passed');
    expect(a?.queue).toEqual([]);
  });

  it('does nothing for a build that is not running, or a job that is not the current one of its slot', () => {
    const done = finish(startStages(build([slot(1, 0)])), { 1: 'passed' });
    expect(advance({ ...done, state: 'canceled' })).toBeUndefined();
    expect(finishJob(done, 'jnot-mine', 'failed')).toBeUndefined();
    expect(finishJob(done, done.slots[0]?.jobId ?? '', 'passed')).toBeUndefined();
    expect(finishJob(done, done.slots[0]?.jobId ?? '', 'running')).toBeUndefined();
  });

  it('re-runs a finished job as the next generation of its slot; a finished build runs again', () => {
    const failed = advance(finish(startStages(build([slot(1, 0), slot(2, 1)])), { 1: 'failed' }))
      ?.build as Build;
    expect(failed.state).toBe('failed');
    const r = rerun(failed, failed.slots[0]?.jobId ?? '');
    expect(r?.slot).toMatchObject({
      n: 1,
      gen: 1,
      state: 'queued',
      jobId: jobIdOf('b1', 1, 1),
      checkKey: 'b1-1-1',
    });
    expect(r?.build.state).toBe('running');
    // Passing now, the skipped later stage is queued as a new generation (its old check run was concluded).
    const again = advance(finish(r?.build as Build, { 1: 'passed' }));
    expect(again?.queue.map((s) => [s.n, s.gen, s.state])).toEqual([[2, 1, 'queued']]);
    expect(again?.queue[0]?.jobId).toBe(jobIdOf('b1', 2, 1));
  });

  it('refuses to re-run a job that still runs, an old generation, or a job of a stage not reached', () => {
    const b = startStages(build([slot(1, 0), slot(2, 1)]));
    expect(rerun(b, b.slots[0]?.jobId ?? '')).toBeUndefined();
    expect(rerun(b, b.slots[1]?.jobId ?? '')).toBeUndefined();
    const done = finish(b, { 1: 'passed' });
    const r = rerun(done, done.slots[0]?.jobId ?? '');
    expect(r).toBeDefined();
    expect(rerun(r?.build as Build, jobIdOf('b1', 1, 0))).toBeUndefined();
  });

  it('cancels a build that has not finished: its queued and running jobs, and the ones waiting', () => {
    const b = startStages(build([slot(1, 0), slot(2, 0), slot(3, 1)]));
    const c = cancelStages(finish(b, { 1: 'passed' }));
    expect(c?.build.state).toBe('canceled');
    expect(c?.running.map((s) => s.n)).toEqual([2]);
    expect(c?.waiting.map((s) => s.n)).toEqual([3]);
    expect(cancelStages(c?.build as Build)).toBeUndefined();
    expect(cancelStages({ ...b, state: 'passed' })).toBeUndefined();
  });

  it('with fast_finish, decides once the required jobs are done, while an allowed failure still runs', () => {
    const slots = () => [slot(1, 0), slot(2, 0, { allowFailure: true }), slot(3, 1)];
    const plain = finish(startStages(build(slots())), { 1: 'passed' });
    expect(advance(plain)).toBeUndefined();
    const fast = finish(startStages(build(slots(), { fastFinish: true })), { 1: 'passed' });
    const a = advance(fast, '2026-01-01T00:01:00.000Z');
    expect(a?.queue.map((s) => s.n)).toEqual([3]);
    expect(a?.build.slots[1]?.state).toBe('queued');
    const done = advance(finish(a?.build as Build, { 3: 'passed' }), '2026-01-01T00:02:00.000Z');
    expect(done?.build).toMatchObject({ state: 'passed', finishedAt: '2026-01-01T00:02:00.000Z' });
    // The allowed failure finishing later is recorded and changes nothing else.
    const late = finish(done?.build as Build, { 2: 'failed' });
    expect(late.slots[1]?.state).toBe('failed');
    expect(advance(late)).toBeUndefined();
  });

  it('with fast_finish, fails at the first required failure without waiting for the rest of the stage', () => {
    const b = startStages(build([slot(1, 0), slot(2, 0), slot(3, 1)], { fastFinish: true }));
    const a = advance(finish(b, { 1: 'failed' }), '2026-01-01T00:01:00.000Z');
    expect(a?.build).toMatchObject({ state: 'failed', finishedAt: '2026-01-01T00:01:00.000Z' });
    expect(a?.skipped.map((s) => s.n)).toEqual([3]);
    expect(a?.build.slots[1]?.state).toBe('queued');
    expect(advance(startStages(build([slot(1, 0), slot(2, 0)])))).toBeUndefined();
  });

  it('restarts the failed jobs of a finished build from the first stage that has one', () => {
    const b = startStages(build([slot(1, 0), slot(2, 0), slot(3, 1), slot(4, 1)]));
    const failed = advance(finish(b, { 1: 'passed', 2: 'failed' }))?.build as Build;
    expect(restartStages(b)).toBeUndefined();
    const r = restartStages(failed, { failedOnly: true });
    expect(r?.build.state).toBe('running');
    expect(r?.build.currentStage).toBe(0);
    expect(r?.queue.map((s) => [s.n, s.gen])).toEqual([[2, 1]]);
    expect(r?.build.slots.map((s) => s.state)).toEqual(['passed', 'queued', 'waiting', 'waiting']);
    const next = advance(finish(r?.build as Build, { 2: 'passed' }));
    expect(next?.queue.map((s) => [s.n, s.gen])).toEqual([
      [3, 1],
      [4, 1],
    ]);
    // All of them: every slot is a new generation.
    const all = restartStages(failed);
    expect(all?.queue.map((s) => [s.n, s.gen])).toEqual([
      [1, 1],
      [2, 1],
    ]);
    const passed = advance(finish(startStages(build([slot(1, 0)])), { 1: 'passed' }))?.build as Build;
    expect(restartStages(passed, { failedOnly: true })).toBeUndefined();
  });

  it('names jobs by build, slot and generation', () => {
    expect(jobIdOf('b1', 1, 0)).toMatch(/^j[0-9a-f]{24}$/);
    expect(
      new Set([jobIdOf('b1', 1, 0), jobIdOf('b1', 1, 1), jobIdOf('b1', 2, 0), jobIdOf('b2', 1, 0)]).size,
    ).toBe(4);
  });
});
