import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'yaml';
import { z } from 'zod';
import { ImageName, ImageNotFoundError, InvalidInputError } from '../src/core/index.ts';

const DebianPackage = z.string().regex(/^[a-z0-9][a-z0-9+.-]+$/, 'a Debian package name');
const Suite = z.string().regex(/^[a-z][a-z0-9-]*$/, 'a Debian suite name such as bookworm');

const Command = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9+._-]*$/, 'a command name');

/**
 * What an image provides that a repository config may ask for by name: commands (compilers,
 * language runtimes) and the version of each language (by Travis version key: `python`, `perl`).
 * `config expand` warns about a `compiler:` or a version the image does not have; the system
 * suite checks that the built image has every command listed.
 */
export const RecipeProvides = z
  .object({
    commands: z.array(Command).default([]),
    versions: z.record(z.string(), z.string().regex(/^\d+(\.\d+)*$/, 'a version such as 3.11.2')).default({}),
  })
  .strict();
export type RecipeProvides = z.infer<typeof RecipeProvides>;

/** An image recipe: a small declarative file in images/recipes/, so adding an image needs no code. */
export const Recipe = z.discriminatedUnion('base', [
  z.object({
    name: ImageName,
    description: z.string().default(''),
    /** Debian's busybox-static package of the arch, with its applets linked. */
    base: z.literal('busybox'),
    suite: Suite,
    provides: RecipeProvides.optional(),
  }),
  z.object({
    name: ImageName,
    description: z.string().default(''),
    /** A Debian root built by mmdebstrap. */
    base: z.literal('debian'),
    suite: Suite,
    variant: z.enum([
      'extract',
      'custom',
      'essential',
      'apt',
      'required',
      'minbase',
      'buildd',
      'important',
      'standard',
    ]),
    packages: z.array(DebianPackage).default([]),
    provides: RecipeProvides.optional(),
  }),
]);
export type Recipe = z.infer<typeof Recipe>;

/** The recipes shipped with archway. */
export const RECIPES_DIR = new URL('./recipes/', import.meta.url).pathname;

/** Loads the recipe called `name` from `dir`; an unknown name lists the ones there are. */
export async function loadRecipe(name: string, dir = RECIPES_DIR): Promise<Recipe> {
  const valid = ImageName.safeParse(name);
  if (!valid.success) throw new InvalidInputError('image', `'${name}': ${valid.error.issues[0]?.message}`);
  let text: string;
  try {
    text = await readFile(join(dir, `${name}.yml`), 'utf8');
  } catch {
    const known = await listRecipes(dir);
    throw new ImageNotFoundError(
      `no recipe for image '${name}' in ${dir} (known: ${known.join(', ') || 'none'})`,
    );
  }
  const parsed = Recipe.safeParse(parse(text));
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new InvalidInputError(
      `${name}.yml ${i?.path.join('.') ?? ''}`.trim(),
      i?.message ?? 'invalid recipe',
    );
  }
  if (parsed.data.name !== name) {
    throw new InvalidInputError(
      `${name}.yml name`,
      `the recipe calls itself '${parsed.data.name}'; the file name must match`,
    );
  }
  return parsed.data;
}

export async function listRecipes(dir = RECIPES_DIR): Promise<string[]> {
  const files = await readdir(dir).catch(() => [] as string[]);
  return files
    .filter((f) => f.endsWith('.yml'))
    .map((f) => f.slice(0, -4))
    .sort();
}

/** What each recipe in `dir` says its image provides, by image name (recipes without `provides:` are left out). */
export async function recipeToolchains(dir = RECIPES_DIR): Promise<Record<string, RecipeProvides>> {
  const out: Record<string, RecipeProvides> = {};
  for (const name of await listRecipes(dir)) {
    const recipe = await loadRecipe(name, dir);
    if (recipe.provides !== undefined) out[name] = recipe.provides;
  }
  return out;
}
