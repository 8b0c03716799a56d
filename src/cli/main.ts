import { Command, CommanderError } from 'commander';
import { ArchwayError, toError } from '../core/index.ts';
import { registerApi } from './commands/api.ts';
import { registerBuild } from './commands/build.ts';
import { registerClient } from './commands/client.ts';
import { registerConfig } from './commands/config.ts';
import { registerDoctor } from './commands/doctor.ts';
import { registerImages } from './commands/images.ts';
import { registerNodes } from './commands/nodes.ts';
import { registerPools } from './commands/pools.ts';
import { registerRun } from './commands/run.ts';
import { registerScaler } from './commands/scaler.ts';
import { registerUp } from './commands/up.ts';
import { registerWorker } from './commands/worker.ts';

/** The `archway` command line. `env` is injectable for tests; only this file reads process.env. */
export async function main(
  argv: string[],
  env: Record<string, string | undefined> = process.env,
): Promise<void> {
  const program = new Command('archway')
    .description('CI runner backend for ephemeral multi-arch builders')
    .showHelpAfterError()
    .exitOverride();
  registerUp(program, env);
  registerRun(program, env);
  registerImages(program, env);
  registerDoctor(program, env);
  registerApi(program, env);
  registerClient(program, env);
  registerBuild(program, env);
  registerConfig(program, env);
  registerWorker(program, env);
  registerNodes(program, env);
  registerPools(program, env);
  registerScaler(program, env);
  try {
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
