import { describe, expect, it } from 'vitest';
import { HostConfig, parseConfig } from '../../src/core/index.ts';

const host = (env: Record<string, string>) => parseConfig(HostConfig, env);

// Issue #10: a second installation with its own pool but the default run directory and cgroup
// parent reaped the first one's containers.
describe('the run directory and cgroup parent follow the pool', () => {
  it('keep /run/archway and archway for the default pool', () => {
    expect(host({})).toMatchObject({ ARCHWAY_RUN_DIR: '/run/archway', ARCHWAY_CGROUP_PARENT: 'archway' });
    expect(host({ ARCHWAY_POOL_PATH: '/var/lib/archway/' })).toMatchObject({
      ARCHWAY_RUN_DIR: '/run/archway',
      ARCHWAY_CGROUP_PARENT: 'archway',
    });
  });
  it('are /run/archway-NAME and archway-NAME for /var/lib/archway-NAME', () => {
    expect(host({ ARCHWAY_POOL_PATH: '/var/lib/archway-second' })).toMatchObject({
      ARCHWAY_RUN_DIR: '/run/archway-second',
      ARCHWAY_CGROUP_PARENT: 'archway-second',
    });
  });
  it('are named after a hash of any other path, different for different paths', () => {
    const a = host({ ARCHWAY_POOL_PATH: '/srv/ci/pool' });
    const b = host({ ARCHWAY_POOL_PATH: '/srv/ci2/pool' });
    expect(a.ARCHWAY_RUN_DIR).toMatch(/^\/run\/archway-[0-9a-f]{10}$/);
    expect(a.ARCHWAY_CGROUP_PARENT).toBe(a.ARCHWAY_RUN_DIR.slice('/run/'.length));
    expect(b.ARCHWAY_RUN_DIR).not.toBe(a.ARCHWAY_RUN_DIR);
  });
  it('never override a value that is set', () => {
    expect(
      host({ ARCHWAY_POOL_PATH: '/srv/x', ARCHWAY_RUN_DIR: '/run/mine', ARCHWAY_CGROUP_PARENT: 'mine' }),
    ).toMatchObject({ ARCHWAY_RUN_DIR: '/run/mine', ARCHWAY_CGROUP_PARENT: 'mine' });
  });
});
