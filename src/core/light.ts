/**
 * The second door of the core: the parts that load no heavy package (no ioredis, pino,
 * prom-client or execa), for the CLI's client commands. `src/core/index.ts` re-exports these
 * too; importing this file instead keeps `archway jobs` from loading the whole core (the bundle
 * cannot drop a module of a barrel whose top level calls zod), which issue #13 bounds at 300 ms.
 */
export * from './domain.ts';
export * from './errors/index.ts';
// Types only: job.ts builds the job schemas when it loads.
export type { Attempt, JobRecord, JobState } from './job.ts';
export * from './parse-config.ts';
export * from './queue-place-text.ts';
