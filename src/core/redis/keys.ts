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
    /** Finished jobs by the time (ms) their record expires: the retention sweep removes them and their index entries. */
    jobsExpiry: `${t}:jobs:expiry`,
    idempotency: (hash: string) => `${t}:idem:${hash}`,
    /** An uploaded tree (`POST /v1/uploads`): its sha, size, the API replica that holds it, the build that claimed it. */
    upload: (id: string) => `${t}:upload:${id}`,
    events: `${t}:events`,
    cancelChannel: `${t}:cancel`,
    /** Drain and undrain requests for nodes (the node id is the message). */
    nodeControlChannel: `${t}:node-control`,
    nodes: `${t}:nodes`,
    node: (id: string) => `${t}:node:${id}`,
    /** The image catalog of one image and arch: a hash of its published versions and the current one. */
    imageCatalog: (name: string, arch: Arch) => `${t}:image:${name}:${arch}`,
    /** Every `name/arch` that has a catalog entry. */
    imagesAll: `${t}:images`,
    /** Image sync events: one entry per published version, followed by every worker's sync agent. */
    imageEvents: `${t}:image-events`,
    /** A pool's settings (min, max, slotsPerNode), the scaler's `desired` and its last report: a hash per arch. */
    pool: (arch: Arch) => `${t}:pool:${arch}`,
    /** Held by the one scaler that acts (the others stand by): its instance id, with a TTL. */
    scalerLock: `${t}:scaler:lock`,
    /** GitHub: a webhook delivery seen (SET NX with a TTL), so a redelivery makes nothing new. */
    githubDelivery: (id: string) => `${t}:gh:delivery:${id}`,
    /** BullMQ queue of verified deliveries waiting to be processed. */
    githubEventsQueue: 'github-events',
    /** BullMQ queue of check runs with updates to send to GitHub. */
    githubChecksQueue: 'github-checks',
    /** A build made from a webhook: a hash (repo, sha, event, stages, jobs). */
    build: (id: string) => `${t}:gh:build:${id}`,
    /** Every build by its creation time (ms), for listing newest first. */
    buildsAll: `${t}:builds`,
    /** The build number counter of a repository. */
    buildNumber: (repo: string) => `${t}:gh:build-number:${repo}`,
    /** The newest build of a branch or pull request (`push:<branch>`, `pr:<n>`), for auto-cancel. */
    buildLatest: (repo: string, scope: string) => `${t}:gh:build-latest:${repo}:${scope}`,
    /** Claimed by the first event that builds a commit for a branch or pull request (push and check_suite requested both ask). */
    buildClaim: (repo: string, sha: string, scope: string) => `${t}:gh:build-claim:${repo}:${sha}:${scope}`,
    /** Held (with a TTL) by the one event starting the claimed build; another event waits, a retry takes over. */
    buildClaimLock: (repo: string, sha: string, scope: string) =>
      `${t}:gh:build-claim-lock:${repo}:${sha}:${scope}`,
    /** The builds of a commit, newest last (check_suite rerequested, dedup of check_suite requested). */
    buildsOfSha: (repo: string, sha: string) => `${t}:gh:builds-of:${repo}:${sha}`,
    /** One check run: its state, GitHub id and applied sequence (a hash); its pending updates (a list). */
    checkRun: (key: string) => `${t}:gh:check:${key}`,
    checkRunUpdates: (key: string) => `${t}:gh:check:${key}:updates`,
    checkRunLock: (key: string) => `${t}:gh:check:${key}:lock`,
    /** The GitHub reporter: its position in the events stream, and the lease of the one that runs. */
    githubReporterPosition: `${t}:gh:reporter:position`,
    githubReporterLease: `${t}:gh:reporter:lease`,
    /** The follower of API builds (stage advance on job events): its position and the lease of the one that runs. */
    buildFollowerPosition: `${t}:builds:follower:position`,
    buildFollowerLease: `${t}:builds:follower:lease`,
    /** A job's short-lived source credential (JSON {host, token}), read by its worker; with a TTL. */
    sourceCredential: (jobId: string) => `${t}:source-cred:${jobId}`,
    /** Jobs with a source credential, by the credential's expiry (ms): renewed while they wait. */
    sourceCredentials: `${t}:source-creds`,
    /** Concurrency caps: a hash of group (`repo=owner/name`, `key=value`, `repo=*` the repositories' default) to its cap. */
    limits: `${t}:limits`,
    /** The slots of a concurrency group held now: job id by the lease's expiry (ms, Redis time). */
    limitRunning: (group: string) => `${t}:limit:run:${group}`,
    /** The line of a concurrency group: `arch/id` of held jobs by when they first waited (ms). */
    limitWaiting: (group: string) => `${t}:limit:wait:${group}`,
    /** When each held job (`arch/id`) last looked for a slot (ms): one that stopped looking leaves the line. */
    limitWaiterSeen: `${t}:limit:seen`,
    /** Concurrency groups with jobs in line, for the control plane's wake-up pass. */
    limitGroupsWaiting: `${t}:limit:groups-waiting`,
    /** Concurrency groups with slots held, for the listing and the wake-up pass (a lease that ran out). */
    limitGroupsRunning: `${t}:limit:groups-running`,
    /** Jobs of an arch held by a cap, by when they last looked (ms): what the pools' estimates leave out. */
    limitHeld: (arch: Arch) => `${t}:limit:held:${arch}`,
    log: (id: string) => `${prefix}:log:{${id}}`,
    /** The newest attempt that wrote to a job's log (beside the log, same tag): an older one's writes are refused. */
    logFence: (id: string) => `${prefix}:logfence:{${id}}`,
  } as const;
}
export type Keys = ReturnType<typeof createKeys>;
