import { type ChildProcess, spawn } from 'node:child_process';
import type { Arch } from '../../src/core/index.ts';
import type { TestCluster } from './cluster.ts';
import { TEST_ENV } from './test-host.ts';

/** Resolves with the exit code once `p` has exited (at once when it already has). */
export const exited = (p: ChildProcess): Promise<number | null> =>
  p.exitCode !== null || p.signalCode !== null
    ? Promise.resolve(p.exitCode)
    : new Promise<number | null>((r) => p.once('exit', (code) => r(code)));

/** Real `archway worker` processes on a test cluster's Redis and keys, and their clean-up. */
export interface WorkerProcesses {
  /** A worker process of one slot and no warm container, named `nodeId`. */
  spawn(cluster: TestCluster, nodeId: string, arch?: Arch): ChildProcess;
  /** Sends `signal` to every one still running and waits for them all to exit. */
  stopAll(signal: NodeJS.Signals): Promise<void>;
}

export function workerProcesses(): WorkerProcesses {
  const children: ChildProcess[] = [];
  return {
    spawn(cluster, nodeId, arch = 'amd64') {
      const child = spawn('bin/archway', ['worker', '--arch', arch, '--slots', '1', '--warm', '0'], {
        env: {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          ...TEST_ENV,
          REDIS_URL: cluster.redis.url,
          ARCHWAY_REDIS_PREFIX: cluster.keys.prefix,
          ARCHWAY_NODE_ID: nodeId,
        },
        stdio: 'ignore',
      });
      children.push(child);
      return child;
    },
    async stopAll(signal) {
      for (const p of children.splice(0)) {
        if (p.exitCode === null && p.signalCode === null) p.kill(signal);
        await exited(p);
      }
    },
  };
}
