/** Images: recipes, the builder, the store of built versions on this host, publishing and the sync agent. */
export { BLOB_SWEEP_GRACE_MS, blobPath, hasBlob, sweepBlobs, writeBlob } from './blob-store.ts';
export {
  type BuildImageOptions,
  buildImage,
  ensureImage,
  KEPT_VERSIONS,
  pruneVersions,
} from './build-image.ts';
export {
  type BuildProgress,
  createProgressPrinter,
  formatBuildProgress,
  MmdebstrapProgress,
  type ProgressPrinterOptions,
} from './build-progress.ts';
export { blobUrl, type DownloadBlobOptions, downloadBlob } from './download-blob.ts';
export {
  createImageStore,
  type ImageStore,
  type ImageStoreOptions,
  ImageVersion,
  type ResolvedImage,
} from './image-store.ts';
export { type PublishImageOptions, type PublishResult, publishImage } from './publish-image.ts';
export { type IdRange, imageForRange, rangeCopiesOf, removeRangeCopies } from './range-copies.ts';
export { listRecipes, loadRecipe, RECIPES_DIR, Recipe, RecipeProvides, recipeToolchains } from './recipe.ts';
export {
  createSyncAgent,
  type SyncAgent,
  type SyncAgentEvents,
  type SyncAgentOptions,
  type SyncKind,
} from './sync-agent.ts';
export { STAGING_PREFIX, type VerifyAndReceiveOptions, verifyAndReceive } from './verify-and-receive.ts';
