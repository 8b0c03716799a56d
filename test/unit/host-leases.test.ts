import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createHostLeases, LeasesExhaustedError, processIdentity } from '../../src/core/index.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'leases-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const me = async () => {
  const id = await processIdentity(process.pid);
  if (!id) throw new Error('no /proc entry for this process');
  return id;
};

describe('host leases', () => {
  it('hands out the lowest free index, never one index twice, and takes released ones back', async () => {
    const leases = createHostLeases({ dir, size: 4 });
    const owner = await me();
    const got = await Promise.all(['a', 'b', 'c', 'd'].map((id) => leases.acquire({ id, owner })));
    expect([...got].sort()).toEqual([0, 1, 2, 3]);
    await expect(leases.acquire({ id: 'e', owner })).rejects.toBeInstanceOf(LeasesExhaustedError);
    await leases.release(got[1] as number, 'b');
    expect(await leases.acquire({ id: 'e', owner })).toBe(got[1]);
  });

  it('release by another id leaves the lease alone', async () => {
    const leases = createHostLeases({ dir, size: 2 });
    const i = await leases.acquire({ id: 'a', owner: await me() });
    await leases.release(i, 'not-a');
    expect((await leases.list()).get(i)?.id).toBe('a');
  });

  it('reclaims a lease whose owner and container init are both dead, not one whose init lives', async () => {
    const leases = createHostLeases({ dir, size: 2 });
    const child = spawn('sleep', ['30']);
    const init = await processIdentity(child.pid as number);
    const dead = { pid: 999_999, start: '1' };
    // Index 0: owner dead, container init alive (an orphaned container still running).
    await writeFile(join(dir, '0'), JSON.stringify({ id: 'orphan', owner: dead, init }));
    // Index 1: owner and init dead.
    await writeFile(join(dir, '1'), JSON.stringify({ id: 'gone', owner: dead, init: dead }));
    try {
      expect(await leases.acquire({ id: 'new', owner: await me() })).toBe(1);
      await expect(leases.acquire({ id: 'new2', owner: await me() })).rejects.toBeInstanceOf(
        LeasesExhaustedError,
      );
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('many concurrent acquirers get distinct indexes', async () => {
    const a = createHostLeases({ dir, size: 64 });
    const b = createHostLeases({ dir, size: 64 });
    const owner = await me();
    const got = await Promise.all(
      Array.from({ length: 64 }, (_, k) => (k % 2 ? a : b).acquire({ id: `c${k}`, owner })),
    );
    expect(new Set(got).size).toBe(64);
  });
});
