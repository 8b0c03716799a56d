/**
 * The GitHub side: the repository configuration (`.archway.yml` / `.travis.yml`) and its build
 * matrix, and the GitHub App (verified webhooks, builds from pushes and pull requests, check runs).
 */
export type { BuildInput, BuildRecord, Builds } from './github/builds.ts';
export {
  CHECK_CONCLUSIONS,
  type CheckConclusion,
  type CheckRuns,
  type CheckRunTarget,
  CheckRunUpdate,
  OUTPUT_LIMIT,
} from './github/check-runs.ts';
export {
  createGitHubClient,
  type GitHubClient,
  type GitHubClientOptions,
  gitHostOf,
  loadPrivateKey,
  type SourceToken,
} from './github/github-client.ts';
export {
  createGitHubService,
  type GitHubService,
  type GitHubServiceOptions,
} from './github/github-service.ts';
export { HANDLED_EVENTS, isHandled } from './github/payloads.ts';
export { CONFIG_FILES, readRepoConfig } from './github/read-repo-config.ts';
export { conclusionOf, logTail } from './github/reporter.ts';
export { SignatureInvalidError } from './github/signature-invalid-error.ts';
export { createWebhookRoutes, type Delivery, type WebhookRoutesOptions } from './github/webhook-routes.ts';
export * from './repo-config/index.ts';
