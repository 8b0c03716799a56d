import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Metric names share this prefix. */
const P = 'archway_';

/** What a worker node exports on its /metrics. */
export function createWorkerMetrics(labels: { node: string; arch: string }) {
  const registry = new Registry();
  registry.setDefaultLabels(labels);
  return {
    registry,
    queueWait: new Histogram({
      name: `${P}queue_wait_seconds`,
      help: 'Time from submission (or re-queue) to a node taking the job',
      labelNames: ['arch'] as const,
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900],
      registers: [registry],
    }),
    launch: new Histogram({
      name: `${P}launch_seconds`,
      help: 'Time from taking a job to its process starting in a container',
      labelNames: ['arch', 'start'] as const,
      buckets: [0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2, 5],
      registers: [registry],
    }),
    outcomes: new Counter({
      name: `${P}job_outcomes_total`,
      help: 'Finished attempts by state and reason',
      labelNames: ['arch', 'state', 'reason'] as const,
      registers: [registry],
    }),
    running: new Gauge({
      name: `${P}running_jobs`,
      help: 'Jobs running on this node',
      labelNames: ['arch'] as const,
      registers: [registry],
    }),
    warmPool: new Gauge({
      name: `${P}warm_containers`,
      help: 'Warm containers ready, per image',
      labelNames: ['arch', 'image'] as const,
      registers: [registry],
    }),
    logBytes: new Counter({
      name: `${P}log_bytes_total`,
      help: 'Bytes of job output written to logs',
      labelNames: ['arch'] as const,
      registers: [registry],
    }),
    imageSync: new Histogram({
      name: `${P}image_sync_seconds`,
      help: 'Time to download, verify and receive one image version (full or incremental)',
      labelNames: ['arch', 'image', 'kind'] as const,
      buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900],
      registers: [registry],
    }),
    imageSyncBytes: new Counter({
      name: `${P}image_sync_bytes_total`,
      help: 'Compressed blob bytes received by image sync',
      labelNames: ['arch', 'image', 'kind'] as const,
      registers: [registry],
    }),
    packageCacheFiles: new Gauge({
      name: `${P}package_cache_files`,
      help: "Files the host's package cache (apt-cacher-ng) served from its store (hit) or fetched from the mirror (miss), since it started",
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    packageCacheBytes: new Gauge({
      name: `${P}package_cache_bytes`,
      help: "Bytes the host's package cache fetched from the mirror (from_mirror) and served to jobs (to_jobs), since it started",
      labelNames: ['direction'] as const,
      registers: [registry],
    }),
    imageSyncRejected: new Counter({
      name: `${P}image_sync_rejected_total`,
      help: 'Blobs rejected by image sync (corrupt, truncated, or a failed receive)',
      labelNames: ['arch', 'image', 'kind'] as const,
      registers: [registry],
    }),
  };
}
export type WorkerMetrics = ReturnType<typeof createWorkerMetrics>;
