import type { Command } from 'commander';
import { buildImage } from '../../../images/index.ts';
import { ARCHES, type Arch, parseArch } from '../../domain.ts';
import { createHostContext } from '../host-context.ts';
import { formatBytes, table } from '../table.ts';

/** `--arch a,b` or `--arch all` to a list of arches. */
export function parseArchList(value: string): Arch[] {
  if (value === 'all') return [...ARCHES];
  return [...new Set(value.split(',').map((a) => parseArch(a, '--arch')))];
}

export function registerImages(program: Command, env: Record<string, string | undefined>): void {
  const images = program.command('images').description('build and list images on this host');
  images
    .command('build')
    .description('build an image from its recipe in images/recipes')
    .argument('<name>', 'recipe name: busybox, debian-bookworm, debian-bookworm-build, ...')
    .requiredOption('--arch <arches>', "one arch, a comma-separated list, or 'all'")
    .action(async (name: string, opts: { arch: string }) => {
      const arches = parseArchList(opts.arch);
      const ctx = await createHostContext(env, 'images');
      const stop = new AbortController();
      process.once('SIGINT', () => stop.abort(new Error('interrupted')));
      // One at a time: builds of one suite share the package cache and apt lists.
      for (const arch of arches) {
        const img = await buildImage(name, arch, {
          store: ctx.store,
          cacheDir: ctx.cacheDir,
          idBase: ctx.config.ARCHWAY_UID_BASE,
          mirror: ctx.config.ARCHWAY_DEBIAN_MIRROR,
          logger: ctx.logger,
          signal: stop.signal,
        });
        process.stdout.write(
          `built ${img.name} for ${img.arch}: ${img.digest} (${formatBytes(img.sizeBytes)})\n`,
        );
      }
    });
  images
    .command('list')
    .description('list the images held on this host, with their digests')
    .option('--all', 'also list versions that are not current')
    .action(async (opts: { all?: boolean }) => {
      const ctx = await createHostContext(env, 'images');
      const rows = (await ctx.store.list()).filter((i) => opts.all || i.current);
      process.stdout.write(
        table(
          ['NAME', 'ARCH', 'DIGEST', 'SIZE', 'CREATED', ...(opts.all ? ['CURRENT'] : [])],
          rows.map((i) => [
            i.name,
            i.arch,
            i.digest,
            formatBytes(i.sizeBytes),
            i.createdAt,
            ...(opts.all ? [i.current ? 'yes' : ''] : []),
          ]),
        ),
      );
    });
}
