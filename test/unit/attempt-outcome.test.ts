import { describe, expect, it } from 'vitest';
import {
  AbortedError,
  ArchwayError,
  HostCommandError,
  ImageNotFoundError,
  InvalidInputError,
} from '../../src/core/index.ts';
import { type AttemptFacts, classifyAttempt, SourceFetchError } from '../../workers/index.ts';

const facts = (f: Partial<AttemptFacts>): AttemptFacts => ({ lastAttempt: false, ...f });
const missingImage = new ImageNotFoundError("no image 'busybx' for arm64 on this host");

describe('classifyAttempt: whose failure an attempt is', () => {
  it('an exit: passed on 0, failed otherwise, with the stop reason over the exit', () => {
    expect(classifyAttempt(facts({ exit: { exitCode: 0 } }))).toEqual({
      state: 'passed',
      exitCode: 0,
      host: 'fine',
    });
    expect(classifyAttempt(facts({ exit: { exitCode: 3 } }))).toMatchObject({ state: 'failed', exitCode: 3 });
    expect(classifyAttempt(facts({ exit: { exitCode: 137, reason: 'oom' } }))).toMatchObject({
      state: 'failed',
      reason: 'oom',
      host: 'fine',
    });
    expect(classifyAttempt(facts({ exit: { exitCode: 0, reason: 'timeout' } }))).toMatchObject({
      state: 'failed',
      reason: 'timeout',
    });
    // The worker's own stop (silence) names the reason even though the launcher saw a kill.
    expect(
      classifyAttempt(facts({ stopReason: 'silence', exit: { exitCode: 137, reason: 'canceled' } })),
    ).toMatchObject({ state: 'failed', reason: 'silence' });
    expect(
      classifyAttempt(facts({ stopReason: 'superseded', exit: { exitCode: 137, reason: 'canceled' } })),
    ).toMatchObject({ state: 'canceled', reason: 'superseded' });
  });

  it('a cancel before the process started: canceled, and says nothing about the host', () => {
    expect(
      classifyAttempt(
        facts({ stopReason: 'canceled', error: new AbortedError('job j1', new Error('canceled')) }),
      ),
    ).toEqual({ state: 'canceled', reason: 'canceled', host: 'unknown' });
  });

  it('a shutdown: errored, retried unless it was the last attempt, and never counted against the host', () => {
    expect(classifyAttempt(facts({ stopReason: 'shutdown', exit: { exitCode: 137 } }))).toEqual({
      state: 'errored',
      error: 'the node was stopped',
      retry: true,
      host: 'unknown',
    });
    expect(
      classifyAttempt(
        facts({ stopReason: 'shutdown', error: new AbortedError('job j1'), lastAttempt: true }),
      ),
    ).toMatchObject({ state: 'errored', retry: false, host: 'unknown' });
  });

  it('an image nobody holds is the job’s mistake (bad_spec)', () => {
    expect(classifyAttempt(facts({ error: missingImage, missingImage: 'nowhere' }))).toEqual({
      state: 'failed',
      reason: 'bad_spec',
      error: missingImage.message,
      host: 'fine',
    });
  });

  it('an image the catalog published long ago and this node lacks is its failure (its sync is overdue), retried elsewhere', () => {
    expect(classifyAttempt(facts({ error: missingImage, missingImage: 'overdue' }))).toEqual({
      state: 'errored',
      error: missingImage.message,
      retry: true,
      host: 'failed',
    });
    expect(
      classifyAttempt(facts({ error: missingImage, missingImage: 'overdue', lastAttempt: true })),
    ).toMatchObject({ state: 'errored', retry: false, host: 'failed' });
  });

  it('an image published just now (still syncing here) or held by another node: retried, not counted against this node', () => {
    expect(classifyAttempt(facts({ error: missingImage, missingImage: 'elsewhere' }))).toEqual({
      state: 'errored',
      error: missingImage.message,
      retry: true,
      host: 'unknown',
    });
  });

  it('a source that cannot be fetched: retried while attempts are left, then failed (source); never the host’s', () => {
    const down = new SourceFetchError('fetching HEAD from https://git.example/x.git: exit 128', {
      infra: true,
    });
    expect(classifyAttempt(facts({ error: down }))).toEqual({
      state: 'errored',
      error: down.message,
      retry: true,
      host: 'unknown',
    });
    expect(classifyAttempt(facts({ error: down, lastAttempt: true }))).toEqual({
      state: 'failed',
      reason: 'source',
      error: down.message,
      host: 'fine',
    });
    const noCommit = new SourceFetchError('https://git.example/x.git has no commit abc', { infra: false });
    expect(classifyAttempt(facts({ error: noCommit }))).toMatchObject({ state: 'failed', reason: 'source' });
  });

  it('limits over the ceilings, a bad env: the job’s mistake (bad_spec)', () => {
    const over = new InvalidInputError('limits.memoryMiB', "1024 MiB is over this node's ceiling");
    expect(classifyAttempt(facts({ error: over }))).toEqual({
      state: 'failed',
      reason: 'bad_spec',
      error: over.message,
      host: 'fine',
    });
  });

  it('a host command or an unexpected error: errored, retried, counted against the host', () => {
    const runc = new HostCommandError('runc run', 1, 'cgroup: no space left on device');
    expect(classifyAttempt(facts({ error: runc }))).toEqual({
      state: 'errored',
      error: runc.message,
      retry: true,
      host: 'failed',
    });
    expect(classifyAttempt(facts({ error: new Error('EIO') }))).toMatchObject({
      state: 'errored',
      retry: true,
      host: 'failed',
    });
    // An error archway raised that is neither the host's nor a spec's (after a stop): errored, not retried.
    expect(
      classifyAttempt(
        facts({ stopReason: 'log_limit', error: new ArchwayError('X', 'odd', { infra: false }) }),
      ),
    ).toMatchObject({ state: 'errored', retry: false, host: 'failed' });
  });
});
