import type { JobRecord } from '../core/index.ts';
import type { ApiDeps } from './api-deps.ts';
import type { JobQueuePlace } from './schemas.ts';

/**
 * Reads where a queued job stands in its arch's queue, with its own wait estimate (issue #13):
 * what `GET /v1/jobs/:id` serves as `queue`, and the job's page shows.
 */
export function createQueuePlaceReader(
  deps: Pick<ApiDeps, 'queue' | 'poolStatus'>,
): (job: JobRecord) => Promise<JobQueuePlace | undefined> {
  return async (job) => {
    const place = await deps.queue.place(job);
    switch (place?.status) {
      case undefined:
        return undefined;
      case 'waiting': {
        const e = await deps.poolStatus.estimateAt(job.arch, place.position);
        return { ...place, estimatedWaitSeconds: e.seconds, estimate: { basis: e.basis, note: e.note } };
      }
      case 'delayed':
        return { ...place, until: new Date(place.until).toISOString() };
      case 'held':
      case 'starting':
        return place;
      default: {
        const never: never = place;
        return never;
      }
    }
  };
}
