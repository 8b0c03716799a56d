import type { Command } from 'commander';
import { buildImage, createProgressPrinter, publishImage } from '../../../images/index.ts';
import { createImageCatalog } from '../../../queue/index.ts';
import {
  ARCHES,
  type Arch,
  blobDirOf,
  createKeys,
  createRedis,
  PublishConfig,
  parseArch,
  parseConfig,
} from '../../core/index.ts';
import { apiClientFrom, CLIENT_ENV_HELP } from '../api-client.ts';
import { createHostContext, HOST_ENV_HELP } from '../host-context.ts';
import { withLogFormat } from '../log-format.ts';
import { out, outJson } from '../output.ts';
import { formatBytes, table } from '../table.ts';

interface ImageStatusRow {
  name: string;
  arch: string;
  current: { digest: string; publishedAt: string; full: { sizeBytes: number } } | null;
  versions: { digest: string; current: boolean; nodes: { id: string; current: boolean; lost: boolean }[] }[];
}

const short = (digest: string) => digest.replace(/^sha256:/, '').slice(0, 12);

/** `--arch a,b` or `--arch all` to a list of arches. */
export function parseArchList(value: string): Arch[] {
  if (value === 'all') return [...ARCHES];
  return [...new Set(value.split(',').map((a) => parseArch(a, '--arch')))];
}

export function registerImages(program: Command, env: Record<string, string | undefined>): void {
  // `images status --json`: the parent `images` has --json too, and commander gives it the option.
  const showStatus = async (_opts: unknown, cmd: Command) => {
    const opts = cmd.optsWithGlobals<{ json?: boolean }>();
    const answer = await apiClientFrom(env).json<{ images: ImageStatusRow[] }>('GET', '/v1/images');
    if (opts.json) return outJson(answer);
    const list = answer.images;
    const rows: string[][] = [];
    for (const i of list) {
      for (const v of i.versions) {
        const nodes = v.nodes.map((n) => `${n.id}${n.current ? '' : ' (old)'}${n.lost ? ' (lost)' : ''}`);
        rows.push([
          i.name,
          i.arch,
          short(v.digest),
          v.current ? 'current' : '',
          v.current && i.current ? formatBytes(i.current.full.sizeBytes) : '',
          nodes.join(', ') || '-',
        ]);
      }
    }
    await out(table(['NAME', 'ARCH', 'DIGEST', 'CATALOG', 'BLOB', 'NODES'], rows));
  };
  const statusHelp = `${CLIENT_ENV_HELP}

Example:
  archway images status --json`;
  // Bare `archway images` shows the fleet's view: what is current, and which nodes hold what.
  const images = program
    .command('images')
    .description('build, publish and list images; alone: their sync state')
    .option('--json', 'print {"images": [...]} as the API returns them')
    .addHelpText('after', statusHelp)
    .action(showStatus);
  withLogFormat(images.command('build'), env)
    .description('build an image from its recipe in images/recipes')
    .argument('<name>', 'recipe name: busybox, debian-bookworm, debian-bookworm-build, ...')
    .requiredOption('--arch <arches>', "one arch, a comma-separated list, or 'all'")
    .addHelpText(
      'after',
      `${HOST_ENV_HELP}
  ARCHWAY_DEBIAN_MIRROR the Debian mirror (default http://deb.debian.org/debian)

Example:
  archway images build debian-bookworm --arch amd64,arm64`,
    )
    .action(async (name: string, opts: { arch: string }) => {
      const arches = parseArchList(opts.arch);
      const ctx = await createHostContext(env, 'images');
      const stop = new AbortController();
      process.once('SIGINT', () => stop.abort(new Error('interrupted')));
      // A live line on a terminal, a line per phase in a log; on stderr, so stdout is the result.
      const printer = createProgressPrinter({
        tty: process.stderr.isTTY === true,
        write: (text) => process.stderr.write(text),
      });
      // One at a time: builds of one suite share the package cache and apt lists.
      for (const arch of arches) {
        const img = await buildImage(name, arch, {
          store: ctx.store,
          cacheDir: ctx.cacheDir,
          idBase: ctx.config.ARCHWAY_UID_BASE,
          mirror: ctx.config.ARCHWAY_DEBIAN_MIRROR,
          logger: ctx.logger,
          signal: stop.signal,
          onProgress: printer.update,
          // Older versions that no container on the pool uses go once the new one is current
          // (loaded here: the other images commands need none of the workers' code).
          inUse: async () =>
            (await import('../../../workers/index.ts')).imagesInUseOn(ctx.config.ARCHWAY_POOL_PATH),
        }).finally(() => printer.end());
        process.stdout.write(
          `built ${img.name} for ${img.arch}: ${img.digest} (${formatBytes(img.sizeBytes)})\n`,
        );
      }
    });
  withLogFormat(images.command('publish'), env)
    .description(
      'publish the current version of an image: full and incremental blobs (btrfs send | zstd) to the blob store, then the catalog',
    )
    .argument('<name>', 'image name')
    .requiredOption('--arch <arches>', "one arch, a comma-separated list, or 'all'")
    .addHelpText(
      'after',
      `${HOST_ENV_HELP}
  REDIS_URL             Redis, where the catalog is (default redis://127.0.0.1:6379)
  ARCHWAY_BLOB_DIR      the blob store (default <pool>/blobs)

Example:
  archway images publish busybox --arch all`,
    )
    .action(async (name: string, opts: { arch: string }) => {
      const arches = parseArchList(opts.arch);
      const config = parseConfig(PublishConfig, env);
      const ctx = await createHostContext(env, 'images');
      const redis = createRedis({ url: config.REDIS_URL, name: 'archway-images-publish' });
      redis.on('error', () => undefined);
      const stop = new AbortController();
      process.once('SIGINT', () => stop.abort(new Error('interrupted')));
      try {
        const catalog = createImageCatalog(redis, createKeys(config.ARCHWAY_REDIS_PREFIX));
        for (const arch of arches) {
          const { entry, published } = await publishImage(name, arch, {
            store: ctx.store,
            catalog,
            blobDir: blobDirOf(config),
            logger: ctx.logger,
            signal: stop.signal,
          });
          const incr = entry.incremental
            ? `, incremental from ${short(entry.parent ?? '')} ${formatBytes(entry.incremental.sizeBytes)}`
            : '';
          process.stdout.write(
            `${published ? 'published' : 'already published'} ${entry.name} for ${arch}: ${entry.digest} (full ${formatBytes(entry.full.sizeBytes)}${incr})\n`,
          );
        }
      } finally {
        redis.disconnect();
      }
    });
  images
    .command('status')
    .description(
      "per image and arch, the catalog's current version and which nodes hold which version (from the API)",
    )
    .option('--json', 'print {"images": [...]} as the API returns them')
    .addHelpText('after', statusHelp)
    .action(showStatus);
  images
    .command('list')
    .description('list the images held on this host, with their digests')
    .option('--all', 'also list versions that are not current')
    .option('--json', 'print {"images": [...]}: name, arch, digest, sizeBytes, createdAt, current')
    .addHelpText('after', `${HOST_ENV_HELP}\n\nExample:\n  archway images list --all --json`)
    .action(async (opts: { all?: boolean; json?: boolean }) => {
      const ctx = await createHostContext(env, 'images');
      const rows = (await ctx.store.list()).filter((i) => opts.all || i.current);
      if (opts.json) return outJson({ images: rows });
      await out(
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
