import type { Command } from 'commander';
import { runWorker } from '../../../workers/index.ts';
import { ImageName, parseArch } from '../../core/index.ts';
import { HOST_ENV_HELP } from '../host-context.ts';
import { withLogFormat } from '../log-format.ts';
import { positiveNumber } from '../parse.ts';
import { VERSION } from '../version.ts';

export function registerWorker(program: Command, env: Record<string, string | undefined>): void {
  withLogFormat(program.command('worker'), env)
    .description('run a worker node: take jobs of one arch from Redis and run them on this host')
    .requiredOption('--arch <arch>', 'amd64, arm64, ppc64le or s390x (foreign arches run emulated)')
    .option('--slots <n>', 'jobs run at once', '2')
    .option('--warm <n>', 'warm containers kept per image and network mode (0 = every job starts cold)', '1')
    .option(
      '--warm-images <list>',
      'comma-separated images to keep warm, in order (default: ARCHWAY_WARM_IMAGES, else every image the node holds)',
    )
    .addHelpText(
      'after',
      `${HOST_ENV_HELP}
  REDIS_URL             Redis (default redis://127.0.0.1:6379)
  ARCHWAY_NODE_ID       this node's id (default <hostname>-<arch>-<pid>)

Example:
  REDIS_URL=redis://10.0.0.5:6379 archway worker --arch arm64 --slots 4`,
    )
    .action(async (opts: { arch: string; slots: string; warm: string; warmImages?: string }) => {
      const warm = Number(opts.warm);
      if (!Number.isInteger(warm) || warm < 0)
        throw new Error(`--warm: expected 0 or a positive integer, got '${opts.warm}'`);
      await runWorker({
        env,
        arch: parseArch(opts.arch, '--arch'),
        slots: positiveNumber('--slots', opts.slots, true),
        warm,
        ...(opts.warmImages !== undefined ? { warmImages: warmImageList(opts.warmImages) } : {}),
        version: VERSION,
      });
    });
}

/** `--warm-images`: image names, comma-separated; checked here so a typo stops the worker at once. */
function warmImageList(value: string): string[] {
  const names = value
    .split(',')
    .map((v) => v.trim())
    .filter(Boolean);
  const bad = names.filter((n) => !ImageName.safeParse(n).success);
  if (bad.length) throw new Error(`--warm-images: not image names: ${bad.join(', ')}`);
  return names;
}
