import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { execa } from 'execa';
import type { Arch, Logger } from '../../../src/core/index.ts';
import type { ReconcileInput, ScalerProvider } from '../provider.ts';

const BIN = new URL('../../../bin/archway', import.meta.url).pathname;

/** How long a node that has left may take to exit before it is sent SIGTERM. */
const EXIT_GRACE_MS = 10_000;

export interface LocalProviderOptions {
  /** The environment of each worker: explicit, never the scaler's whole environment. */
  env: Record<string, string>;
  /** Warm containers per image of each worker (its --warm). */
  warm: number;
  /** A worker that has not registered after this long is stopped, and no longer counts as starting. */
  bootTimeoutMs: number;
  /** How long close() lets the workers drain (their running jobs finish) before stopping them. Default 60 s. */
  closeTimeoutMs?: number;
  logger: Logger;
  /** The archway executable. Default: this checkout's bin/archway. */
  bin?: string;
}

/** One worker process the local provider started. */
export interface LocalWorker {
  nodeId: string;
  arch: Arch;
  pid: number | undefined;
  startedAt: number;
  /** When the scaler first saw it registered (or gave up waiting for it). */
  registeredAt?: number;
  /** Set once it has exited. */
  exit?: { code: number | undefined; signal: string | undefined };
}

export interface LocalProvider extends ScalerProvider {
  /** Every worker started, exited ones included, oldest first. */
  workers(): LocalWorker[];
}

/**
 * Worker processes on this host (`archway worker --arch A --slots N --warm W`), for development and
 * tests. Each gets a node id chosen here, so the scaler knows which process is which node. A node
 * asked to drain exits by itself; one that lingers after leaving gets SIGTERM, as does one that has
 * not registered within bootTimeoutMs (then SIGKILL if it still runs 10 s later). close() sends every
 * worker SIGTERM (it drains: running jobs finish), then after closeTimeoutMs a second SIGTERM
 * (running jobs go back to the queue), then SIGKILL. Workers also get SIGTERM if the scaler dies.
 */
export function createLocalProvider(o: LocalProviderOptions): LocalProvider {
  const procs = new Map<
    string,
    { info: LocalWorker; kill: (signal: NodeJS.Signals) => void; exited: Promise<void> }
  >();
  const log = o.logger.child({ provider: 'local' });
  let closing: Promise<void> | undefined;

  const alive = () => [...procs.values()].filter((p) => !p.info.exit);

  function start(arch: Arch, slots: number): void {
    const nodeId = `${hostname().split('.')[0]}-${arch}-${randomBytes(3).toString('hex')}`.slice(-63);
    const proc = execa(
      o.bin ?? BIN,
      ['worker', '--arch', arch, '--slots', String(slots), '--warm', String(o.warm)],
      {
        env: { ...o.env, ARCHWAY_NODE_ID: nodeId },
        extendEnv: false,
        stdin: 'ignore',
        stdout: 'ignore',
        stderr: 'inherit',
        reject: false,
        // If the scaler dies, its workers get SIGTERM (and drain) rather than outliving it.
        cleanup: true,
        forceKillAfterDelay: false,
      },
    );
    const info: LocalWorker = { nodeId, arch, pid: proc.pid, startedAt: Date.now() };
    const exited = proc.then((r) => {
      info.exit = { code: r.exitCode, signal: r.signal };
      const level = r.exitCode === 0 ? 'info' : 'warn';
      log[level]({ node: nodeId, arch, code: r.exitCode, signal: r.signal }, 'worker exited');
    });
    procs.set(nodeId, { info, kill: (signal) => proc.kill(signal), exited });
    log.info({ node: nodeId, arch, slots, pid: proc.pid }, 'worker started');
  }

  return {
    name: 'local',
    workers: () => [...procs.values()].map((p) => ({ ...p.info })),
    reconcile(arch, i: ReconcileInput) {
      let starting = 0;
      for (const p of alive()) {
        if (p.info.arch !== arch || p.info.registeredAt !== undefined) continue;
        if (i.registered.has(p.info.nodeId)) {
          p.info.registeredAt = i.now;
        } else if (i.now - p.info.startedAt > o.bootTimeoutMs) {
          log.warn({ node: p.info.nodeId, arch }, 'worker did not register in time: stopping it');
          p.info.registeredAt = i.now; // counted no more, whatever it does next
          p.kill('SIGTERM');
          setTimeout(() => p.info.exit ?? p.kill('SIGKILL'), EXIT_GRACE_MS).unref();
        } else {
          starting++;
        }
      }
      return starting;
    },
    async up({ arch, add, slots }) {
      if (closing) return;
      for (let i = 0; i < add; i++) start(arch, slots);
    },
    async down({ node }) {
      const p = procs.get(node);
      if (!p || p.info.exit) return;
      // It has left the registry: it exits by itself within moments; one that lingers is told to.
      setTimeout(() => {
        if (!p.info.exit) {
          log.warn({ node }, 'worker left but did not exit: sending SIGTERM');
          p.kill('SIGTERM');
        }
      }, EXIT_GRACE_MS).unref();
    },
    close() {
      closing ??= (async () => {
        const running = alive();
        for (const p of running) p.kill('SIGTERM');
        const all = Promise.all(running.map((p) => p.exited));
        const timeout = (ms: number) =>
          new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms).unref());
        if ((await Promise.race([all, timeout(o.closeTimeoutMs ?? 60_000)])) === 'timeout') {
          log.warn('workers still draining: stopping them (their jobs go back to the queue)');
          for (const p of alive()) p.kill('SIGTERM');
          if ((await Promise.race([all, timeout(15_000)])) === 'timeout') {
            for (const p of alive()) p.kill('SIGKILL');
            await all;
          }
        }
      })();
      return closing;
    },
  };
}
