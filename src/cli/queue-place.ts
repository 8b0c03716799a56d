import { type JobRecord, placeText as placeWords, type QueuePlaceView } from '../core/light.ts';

export { ordinal, waitText } from '../core/light.ts';

/** What `GET /v1/jobs/:id` says about a queued job's place in its arch's queue (the API's JobQueuePlace). */
export type QueuePlace = QueuePlaceView;

/** A job as `GET /v1/jobs/:id` serves it: the record, and `queue` while it is queued. */
export type ShownJob = JobRecord & { queue?: QueuePlace; pageUrl?: string };

/** Where a queued job stands, in words (src/core/queue-place-text.ts); undefined when the API did not say. */
export function placeText(job: ShownJob): string | undefined {
  return placeWords(job, job.queue);
}
