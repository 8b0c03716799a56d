import { describe, expect, it } from 'vitest';
import { workerMetricsPorts } from '../../src/cli/commands/up.ts';

describe("up: its workers' metrics ports", () => {
  it("follow the API's port, one per worker, in the order of the arches", () => {
    expect(workerMetricsPorts(['amd64', 'arm64', 'ppc64le', 's390x'], 8080, undefined)).toEqual({
      amd64: 8081,
      arm64: 8082,
      ppc64le: 8083,
      s390x: 8084,
    });
  });
  it('start at ARCHWAY_WORKER_METRICS_PORT when it is set', () => {
    expect(workerMetricsPorts(['arm64', 's390x'], 8080, '9101')).toEqual({ arm64: 9101, s390x: 9102 });
  });
  it('are none when the API takes any free port, or the base is 0', () => {
    expect(workerMetricsPorts(['amd64'], 0, undefined)).toEqual({});
    expect(workerMetricsPorts(['amd64'], 8080, '0')).toEqual({});
  });
  it("pass over the ports taken on the host (up's own Redis, another installation's API)", () => {
    const taken = new Set([8082, 8083]);
    expect(workerMetricsPorts(['amd64', 'arm64', 's390x'], 8080, undefined, (p) => taken.has(p))).toEqual({
      amd64: 8081,
      arm64: 8084,
      s390x: 8085,
    });
  });
  it('refuse a base that leaves no room below 65536', () => {
    expect(() => workerMetricsPorts(['amd64', 'arm64'], 8080, '65535')).toThrow(/65535/);
  });
});
