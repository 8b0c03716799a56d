import { Command, CommanderError } from 'commander';
// The errors alone (not the core's door): `--version` must not load zod (issue #13).
import { ArchwayError, toError } from '../core/errors/index.ts';
import { exitQuietlyOnEpipe } from './output.ts';
import { VERSION } from './version.ts';

type Env = Record<string, string | undefined>;
type Register = (program: Command, env: Env) => void;

/**
 * Each command's module, loaded only when that command runs: `archway --version` or
 * `archway jobs` must not load fastify, BullMQ and the runtime (issue #13: at most 300 ms).
 * A module may register several commands; `--help` and an unknown command load them all.
 */
const COMMANDS: Record<string, () => Promise<Register>> = {
  up: async () => (await import('./commands/up.ts')).registerUp,
  run: async () => (await import('./commands/run.ts')).registerRun,
  images: async () => (await import('./commands/images.ts')).registerImages,
  doctor: async () => (await import('./commands/doctor.ts')).registerDoctor,
  api: async () => (await import('./commands/api.ts')).registerApi,
  submit: async () => (await import('./commands/submit.ts')).registerSubmit,
  logs: async () => (await import('./commands/logs.ts')).registerLogs,
  cancel: async () => (await import('./commands/cancel.ts')).registerCancel,
  jobs: async () => (await import('./commands/jobs.ts')).registerJobs,
  job: async () => (await import('./commands/jobs.ts')).registerJobs,
  build: async () => (await import('./commands/build.ts')).registerBuild,
  builds: async () => (await import('./commands/build.ts')).registerBuild,
  restart: async () => (await import('./commands/build.ts')).registerBuild,
  config: async () => (await import('./commands/config.ts')).registerConfig,
  worker: async () => (await import('./commands/worker.ts')).registerWorker,
  nodes: async () => (await import('./commands/nodes.ts')).registerNodes,
  pools: async () => (await import('./commands/pools.ts')).registerPools,
  limits: async () => (await import('./commands/limits.ts')).registerLimits,
  scaler: async () => (await import('./commands/scaler.ts')).registerScaler,
};

/** Commands that run until stopped: a reader that goes away must not end them before their shutdown. */
const LONG_RUNNING = new Set(['up', 'api', 'worker', 'scaler']);

/** The `archway` command line. `env` is injectable for tests; only this file reads process.env. */
export async function main(argv: string[], env: Env = process.env): Promise<void> {
  const program = new Command('archway')
    .description('CI runner backend for ephemeral multi-arch builders')
    .version(VERSION, '-V, --version', "print archway's version")
    .showHelpAfterError()
    .exitOverride();
  exitQuietlyOnEpipe({ longRunning: LONG_RUNNING.has(argv.find((a) => !a.startsWith('-')) ?? '') });
  try {
    const name = argv.find((a) => !a.startsWith('-'));
    const versionOnly = name === undefined && argv.some((a) => a === '-V' || a === '--version');
    const loaders =
      name !== undefined && COMMANDS[name] ? [COMMANDS[name]] : versionOnly ? [] : Object.values(COMMANDS);
    const registered = new Set<Register>();
    for (const load of loaders) {
      const register = await load();
      if (registered.has(register)) continue;
      registered.add(register);
      register(program, env);
    }
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      process.exitCode = e.exitCode === 0 ? 0 : 2;
      return;
    }
    const err = toError(e);
    process.stderr.write(`archway: ${err.message}\n`);
    if (err instanceof ArchwayError) {
      process.exitCode = err.httpStatus >= 400 && err.httpStatus < 500 ? 2 : 1;
    } else {
      process.stderr.write(`${err.stack ?? ''}\n`);
      process.exitCode = 1;
    }
  }
}

await main(process.argv.slice(2));
