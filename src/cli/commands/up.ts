import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { buildImage } from '../../../images/index.ts';
import { ImageNotFoundError } from '../../errors/image-not-found-error.ts';
import { createHostContext, createHostLauncher } from '../host-context.ts';
import { parseArchList } from './images.ts';

const DEMO_SCRIPT = 'echo "hello from $(hostname): $(uname -m), $(uname -s) $(uname -r)"; id';

/**
 * The quick start's main command. For now: make sure the busybox image exists for each arch,
 * then run a job in a fresh container on every arch of this host and print what each said.
 */
export function registerUp(program: Command, env: Record<string, string | undefined>): void {
  program
    .command('up')
    .description('build the busybox image where missing and run a job on every arch on this host')
    .option('--arches <list>', "comma-separated arches, or 'all'", 'all')
    .action(async (opts: { arches: string }) => {
      const arches = parseArchList(opts.arches);
      const ctx = await createHostContext(env, 'up');
      for (const arch of arches) {
        try {
          await ctx.store.resolve('busybox', arch);
        } catch (e) {
          if (!(e instanceof ImageNotFoundError)) throw e;
          process.stdout.write(`building busybox for ${arch}...\n`);
          await buildImage('busybox', arch, {
            store: ctx.store,
            cacheDir: ctx.cacheDir,
            idBase: ctx.config.ARCHWAY_UID_BASE,
            mirror: ctx.config.ARCHWAY_DEBIAN_MIRROR,
            logger: ctx.logger,
          });
        }
      }
      const results = await Promise.all(
        arches.map(async (arch) => {
          const launcher = await createHostLauncher(ctx, arch);
          try {
            const job = await launcher.launch({
              jobId: `up-${arch}-${randomBytes(3).toString('hex')}`,
              image: 'busybox',
              argv: ['sh', '-c', DEMO_SCRIPT],
              timeoutSeconds: 60,
            });
            const chunks: Buffer[] = [];
            job.output.on('data', (c: Buffer) => chunks.push(c));
            const outcome = await job.result;
            return { arch, job, outcome, text: Buffer.concat(chunks).toString() };
          } finally {
            await launcher.close();
          }
        }),
      );
      let failed = 0;
      for (const { arch, job, outcome, text } of results) {
        const how = `${job.emulated ? 'emulated' : 'native'}, ${job.image.name}@${job.image.digest.slice(0, 19)}, launched in ${job.launchMs} ms`;
        process.stdout.write(`\n[${arch}] (${how})\n`);
        for (const line of text.trimEnd().split('\n')) process.stdout.write(`[${arch}] ${line}\n`);
        process.stdout.write(
          `[${arch}] exit ${outcome.exitCode}${outcome.reason ? ` (${outcome.reason})` : ''}\n`,
        );
        if (outcome.exitCode !== 0) failed++;
      }
      process.stdout.write(
        failed
          ? `\n${failed} arch(es) failed\n`
          : `\nall ${results.length} arches ran; every container was destroyed\n`,
      );
      process.exitCode = failed ? 1 : 0;
    });
}
