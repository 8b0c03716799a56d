import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cgroupLeftovers } from '../support/test-host.ts';

// The leftover check itself, on the two layouts a host can have: this VM is hybrid, so without
// these a check that looks in the wrong hierarchy on v2 would pass unseen (issue 10).
let root: string | undefined;
afterEach(async () => {
  if (root) await rm(root, { recursive: true, force: true });
  root = undefined;
});

async function tree(files: Record<string, string>): Promise<string> {
  root = await mkdtemp(join(tmpdir(), 'cgroup-leftovers-'));
  for (const [path, text] of Object.entries(files)) {
    await mkdir(join(root, path, '..'), { recursive: true });
    await writeFile(join(root, path), text);
  }
  return root;
}

describe('cgroupLeftovers', () => {
  it('finds a container cgroup and its processes under the parent on a v2 (unified) host', async () => {
    const r = await tree({
      'cgroup.controllers': 'cpu memory pids\n',
      'archway-t/aw-1/cgroup.procs': '123\n456\n',
      'archway-t/aw-2/cgroup.procs': '',
      // The v1 path must not be what is read on v2.
      'pids/archway-t/other/cgroup.procs': '',
    });
    expect((await cgroupLeftovers('archway-t', r)).sort()).toEqual([
      'cgroup aw-1 with processes 123,456',
      'cgroup aw-2',
    ]);
  });

  it('reads the v1 pids hierarchy on a hybrid host', async () => {
    const r = await tree({
      'unified/cgroup.controllers': '',
      'pids/archway-t/aw-3/cgroup.procs': '789\n',
      'archway-t/not-this/cgroup.procs': '',
    });
    expect(await cgroupLeftovers('archway-t', r)).toEqual(['cgroup aw-3 with processes 789']);
  });

  it('is clean when the parent was never made', async () => {
    const r = await tree({ 'cgroup.controllers': '' });
    expect(await cgroupLeftovers('archway-t', r)).toEqual([]);
  });
});
