import type { Arch } from '../domain.ts';
import { JOB_STATES, type JobState } from '../job.ts';

/**
 * Every Redis key archway uses, named here and nowhere else. State keys share the hash tag
 * `{prefix}`, so the transition script and transactions that touch them together work on Redis
 * Cluster; each job's log stream has its own tag (its job id), so logs spread over the cluster.
 */
export function createKeys(prefix = 'archway') {
  const t = `{${prefix}}`;
  return {
    prefix,
    /** BullMQ's prefix: its queues (`q-<arch>`) live under the same hash tag. */
    bullPrefix: `${t}:bull`,
    queueName: (arch: Arch) => `q-${arch}`,
    job: (id: string) => `${t}:job:${id}`,
    jobsAll: `${t}:jobs`,
    jobsByState: (s: JobState) => `${t}:jobs:state:${s}`,
    allStateKeys: () => JOB_STATES.map((s) => `${t}:jobs:state:${s}`),
    jobsByArch: (a: Arch) => `${t}:jobs:arch:${a}`,
    jobsByLabel: (k: string, v: string) => `${t}:jobs:label:${k}=${v}`,
    idempotency: (hash: string) => `${t}:idem:${hash}`,
    events: `${t}:events`,
    cancelChannel: `${t}:cancel`,
    /** Drain and undrain requests for nodes (the node id is the message). */
    nodeControlChannel: `${t}:node-control`,
    nodes: `${t}:nodes`,
    node: (id: string) => `${t}:node:${id}`,
    log: (id: string) => `${prefix}:log:{${id}}`,
  } as const;
}
export type Keys = ReturnType<typeof createKeys>;
