/**
 * A queued job's place in its arch's queue, as `GET /v1/jobs/:id` serves it (`queue`, the API's
 * JobQueuePlace), and the words the CLI and the job's page say it in.
 */
export type QueuePlaceView =
  | {
      status: 'waiting';
      position: number;
      of: number;
      estimatedWaitSeconds: number | null;
      estimate: { note: string };
    }
  | { status: 'delayed'; until: string; of: number }
  | { status: 'held'; of: number }
  | { status: 'starting'; of: number };

/** 1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, ..., 21st. */
export function ordinal(n: number): string {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? 'th' : (['th', 'st', 'nd', 'rd'][n % 10] ?? 'th');
  return `${n}${suffix}`;
}

/** An estimate in words: `estimated wait 12s`, or why there is none. */
export function waitText(seconds: number | null, note: string): string {
  return seconds === null ? `wait unknown (${note})` : `estimated wait ${Math.round(seconds)}s`;
}

/**
 * Where a queued job stands, in words: `3rd of 7 in the amd64 queue`, `retry in back-off until
 * 17:02:03 UTC`, `held, <why>`, `a node is starting it`; undefined when the API did not say.
 */
export function placeText(
  job: { arch: string; waitReason?: string | undefined },
  q: QueuePlaceView | undefined,
): string | undefined {
  switch (q?.status) {
    case undefined:
      return undefined;
    case 'waiting':
      return `${ordinal(q.position)} of ${q.of} in the ${job.arch} queue`;
    case 'delayed':
      return `retry in back-off until ${q.until.slice(11, 19)} UTC`;
    case 'held':
      return `held, ${job.waitReason ?? 'by a concurrency cap'}`;
    case 'starting':
      return 'a node is starting it';
    default: {
      const never: never = q;
      return never;
    }
  }
}
