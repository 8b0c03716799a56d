import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import {
  ceilingsSet,
  checkCeilings,
  hostCeilings,
  InvalidInputError,
  type Limits,
  NetworkMode,
  parseArch,
  ResourceLimits,
} from '../../core/index.ts';
import { createHostContext, createHostLauncher, HOST_ENV_HELP } from '../host-context.ts';
import { positiveNumber } from '../parse.ts';

/** Exit codes `run` uses for a job that did not simply exit (after coreutils' timeout and the shell's conventions). */
export const RUN_EXIT = { timeout: 124, oom: 137, canceled: 130 } as const;

/** The flag of each limit, for messages. */
const RUN_FLAGS: Record<keyof Limits, string> = {
  cpus: '--cpus',
  memoryMiB: '--memory',
  pids: '--pids',
  diskMiB: '--disk',
};

export function registerRun(program: Command, env: Record<string, string | undefined>): void {
  program
    .command('run')
    .description('run one command in a fresh container on this host, without Redis: a host smoke test')
    .requiredOption(
      '--arch <arch>',
      'amd64, arm64, ppc64le or s390x (aliases: x86_64, aarch64, ppc64el, ...)',
    )
    .requiredOption('--image <name>', 'image name, or name@sha256:<digest>')
    .option('--timeout <seconds>', 'kill the command after this many seconds')
    .option('--memory <MiB>', 'memory limit in MiB (swap included)')
    .option('--cpus <n>', 'CPU limit')
    .option('--pids <n>', 'process and thread limit')
    .option('--disk <MiB>', 'limit on bytes written into the container, in MiB')
    .option('-e, --env <KEY=VALUE...>', 'environment variable for the command')
    .option('--network <mode>', 'none (only loopback) or egress (outbound only, through the host)', 'none')
    .argument('<command...>', 'the command and its arguments (after --)')
    .addHelpText(
      'after',
      `${HOST_ENV_HELP}

Exit codes: the command's own; 124 timeout, 130 canceled, 137 out of memory.

Example:
  archway run --arch arm64 --image busybox --memory 64 -- uname -m`,
    )
    .action(async (command: string[], opts: Record<string, string | string[] | undefined>) => {
      const arch = parseArch(String(opts.arch));
      const network = NetworkMode.safeParse(opts.network);
      if (!network.success)
        throw new InvalidInputError('--network', `expected none or egress, got '${String(opts.network)}'`);
      const limits = {
        ...(opts.memory !== undefined ? { memoryMiB: positiveNumber('--memory', opts.memory, true) } : {}),
        ...(opts.cpus !== undefined ? { cpus: positiveNumber('--cpus', opts.cpus) } : {}),
        ...(opts.pids !== undefined ? { pids: positiveNumber('--pids', opts.pids, true) } : {}),
        ...(opts.disk !== undefined ? { diskMiB: positiveNumber('--disk', opts.disk, true) } : {}),
      };
      const timeoutSeconds =
        opts.timeout === undefined ? undefined : positiveNumber('--timeout', opts.timeout);
      const jobEnv: Record<string, string> = {};
      for (const kv of (opts.env as string[] | undefined) ?? []) {
        const eq = kv.indexOf('=');
        if (eq <= 0) throw new InvalidInputError('--env', `expected KEY=VALUE, got '${kv}'`);
        jobEnv[kv.slice(0, eq)] = kv.slice(eq + 1);
      }
      const ctx = await createHostContext(env, 'run');
      // Refused before any container is made, naming the flag: under the kernel's minima, or over this host's ceilings.
      const parsed = ResourceLimits.safeParse(limits);
      if (!parsed.success) {
        const i = parsed.error.issues[0];
        throw new InvalidInputError(
          RUN_FLAGS[i?.path[0] as keyof Limits] ?? 'limits',
          i?.message ?? 'invalid',
        );
      }
      const c = ctx.config;
      checkCeilings(
        limits,
        hostCeilings({
          poolPath: c.ARCHWAY_POOL_PATH,
          poolSizeGiB: c.ARCHWAY_POOL_SIZE_GIB,
          set: ceilingsSet(c),
        }),
        { field: (k) => RUN_FLAGS[k], where: "this host's" },
      );
      const launcher = await createHostLauncher(ctx, arch);
      const stop = new AbortController();
      const onSignal = () => stop.abort(new Error('interrupted'));
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        const job = await launcher.launch(
          {
            jobId: `run-${randomBytes(4).toString('hex')}`,
            image: String(opts.image),
            argv: command,
            env: jobEnv,
            limits,
            network: network.data,
            ...(timeoutSeconds ? { timeoutSeconds } : {}),
          },
          { signal: stop.signal },
        );
        job.output.pipe(process.stdout, { end: false });
        const outcome = await job.result;
        switch (outcome.reason) {
          case 'timeout':
            process.stderr.write(`archway: timed out after ${timeoutSeconds} s: the command was killed\n`);
            process.exitCode = RUN_EXIT.timeout;
            break;
          case 'oom':
            process.stderr.write(
              `archway: killed: out of memory (limit ${limits.memoryMiB ?? 'default'} MiB)\n`,
            );
            process.exitCode = RUN_EXIT.oom;
            break;
          case 'canceled':
            process.stderr.write('archway: canceled\n');
            process.exitCode = RUN_EXIT.canceled;
            break;
          case undefined:
            process.exitCode = outcome.exitCode;
            break;
          default: {
            const never: never = outcome.reason;
            throw new Error(`unhandled reason ${never}`);
          }
        }
      } finally {
        await launcher.close();
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
}
