import { execa, parseCommandString } from 'execa';
import { type Arch, ArchwayError, InvalidInputError, type Logger } from '../../../src/core/index.ts';
import type { ReconcileInput, ScalerProvider } from '../provider.ts';

export interface ExecProviderOptions {
  /** The operator's command: a program and its arguments, split on spaces (no shell). */
  command: string;
  /** The command's environment besides ARCH, COUNT, ACTION, NODE, ADD and SLOTS: explicit, never the scaler's whole one. */
  env: Record<string, string>;
  /** Longest a run of the command may take; it is then killed (SIGTERM, SIGKILL 5 s later). */
  timeoutMs: number;
  /** Nodes asked for count as starting until they register or this long has passed. */
  bootTimeoutMs: number;
  logger: Logger;
}

/**
 * Runs the operator's command to add or release nodes, with what to do in its environment only
 * (nothing from the data is ever put in a command line):
 *
 * - `ACTION=up ARCH=arm64 COUNT=<the pool's desired total> ADD=<how many more> SLOTS=<slots per node>`
 * - `ACTION=down ARCH=arm64 COUNT=<the pool's total after> NODE=<node id>`: NODE has already
 *   drained and left the registry (or was lost); its machine may go.
 *
 * A non-zero exit is logged and retried at a later pass (after the up cooldown).
 */
export function createExecProvider(o: ExecProviderOptions): ScalerProvider {
  const [file, ...args] = parseCommandString(o.command);
  if (!file) throw new InvalidInputError('ARCHWAY_SCALER_EXEC_COMMAND', 'no program given');
  const log = o.logger.child({ provider: 'exec' });
  /** The total last asked for per arch, and when: nodes still missing from it count as starting. */
  const expected = new Map<Arch, { total: number; at: number }>();
  const ctl = new AbortController();

  async function run(env: Record<string, string>): Promise<void> {
    const r = await execa(file as string, args, {
      env: { ...o.env, ...env },
      extendEnv: false,
      stdin: 'ignore',
      reject: false,
      all: true,
      timeout: o.timeoutMs,
      cancelSignal: ctl.signal,
      forceKillAfterDelay: 5000,
    });
    const output = (typeof r.all === 'string' ? r.all : '').trim().split('\n').slice(-5).join(' | ');
    if (r.failed) {
      const why = r.timedOut ? `timed out after ${o.timeoutMs} ms` : `exit ${r.exitCode ?? r.signal}`;
      throw new ArchwayError(
        'SCALER_COMMAND_FAILED',
        `scaler command (${env.ACTION} ${env.ARCH}) failed: ${why}: ${output}`,
        {
          infra: true,
        },
      );
    }
    log.info({ ...env, output }, 'scaler command done');
  }

  return {
    name: 'exec',
    reconcile(arch, i: ReconcileInput) {
      const e = expected.get(arch);
      if (!e) return 0;
      if (i.now - e.at > o.bootTimeoutMs) {
        if (e.total > i.present)
          log.warn(
            { arch, expected: e.total, present: i.present },
            'nodes asked for did not register in time',
          );
        expected.delete(arch);
        return 0;
      }
      return Math.max(0, e.total - i.present);
    },
    async up({ arch, add, total, slots }) {
      expected.set(arch, { total, at: Date.now() });
      try {
        await run({ ACTION: 'up', ARCH: arch, COUNT: String(total), ADD: String(add), SLOTS: String(slots) });
      } catch (e) {
        expected.delete(arch);
        throw e;
      }
    },
    async down({ arch, node, total }) {
      const e = expected.get(arch);
      if (e && e.total > total) expected.set(arch, { ...e, total });
      await run({ ACTION: 'down', ARCH: arch, COUNT: String(total), NODE: node });
    },
    async close() {
      ctl.abort(new Error('scaler closing'));
    },
  };
}
