/** The HTTP API: the app (for tests and other processes to embed) and the `archway api` process. */
export { type ApiDeps, createApiStores } from './api-deps.ts';
export { API_VERSION, type ApiApp, buildApp } from './build-app.ts';
export { type ApiProcess, type RunApiOptions, runApi } from './main.ts';
export { CreatedJob, ErrorBody, JobList, JobView, maskJob } from './schemas.ts';
