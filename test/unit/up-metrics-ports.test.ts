import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { workerMetricsPorts } from '../../src/cli/commands/up.ts';

describe("up: its workers' metrics ports", () => {
  it('are free ports chosen by the kernel, one per worker, when ARCHWAY_WORKER_METRICS_PORT is unset', async () => {
    const ports = await workerMetricsPorts(['amd64', 'arm64', 'ppc64le', 's390x'], undefined);
    const all = Object.values(ports);
    expect(Object.keys(ports)).toEqual(['amd64', 'arm64', 'ppc64le', 's390x']);
    expect(all.every((p) => p > 0)).toBe(true);
    // Each can be bound: nothing listens there.
    for (const p of all)
      await new Promise<void>((resolve, reject) => {
        const s = createServer();
        s.once('error', reject);
        s.listen(p, () => s.close(() => resolve()));
      });
  });
  it('start at ARCHWAY_WORKER_METRICS_PORT when it is set', async () => {
    expect(await workerMetricsPorts(['arm64', 's390x'], '9101')).toEqual({ arm64: 9101, s390x: 9102 });
  });
  it('are none when ARCHWAY_WORKER_METRICS_PORT is 0', async () => {
    expect(await workerMetricsPorts(['amd64'], '0')).toEqual({});
  });
  it('refuse a base that is not a port, or leaves no room below 65536', async () => {
    await expect(workerMetricsPorts(['amd64'], 'x')).rejects.toThrow(/expected a port number/);
    await expect(workerMetricsPorts(['amd64', 'arm64'], '65535')).rejects.toThrow(/65535/);
  });
});
