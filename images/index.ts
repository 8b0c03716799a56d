/** Images: recipes, the builder, and the store of built versions on this host. */
export { type BuildImageOptions, buildImage } from './build-image.ts';
export {
  createImageStore,
  type ImageStore,
  type ImageStoreOptions,
  ImageVersion,
  type ResolvedImage,
} from './image-store.ts';
export { listRecipes, loadRecipe, RECIPES_DIR, Recipe } from './recipe.ts';
