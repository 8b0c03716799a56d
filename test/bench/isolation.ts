/**
 * Costs of two isolation pieces of issue 9:
 * - the secret masker: automaton build time and size, and throughput over job output, with 1, 10
 *   and 100 secrets of 64 KiB, on ordinary coloured log text and on the worst case (output that
 *   is a near-miss of a secret at every byte);
 * - the orphan watcher a job's exec starts: time to start it, and its memory (PSS of the sh and
 *   its sleep).
 *
 * - the launch cost of that watcher: warm launches on amd64 (launch -> first output byte) with a
 *   job timeout (a watcher is started) and without, alternating (as root; a pool of its own,
 *   ARCHWAY_POOL_PATH, default /var/lib/archway-bench).
 *
 *   npm run bench:isolation          (ARCHWAY_BENCH_RUNS=7, ARCHWAY_BENCH_LAUNCHES=40)
 *
 * Prints a markdown section; docs/benchmarks.md holds the last one taken on the reference machine.
 */

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { buildImage, createImageStore } from '../../images/index.ts';
import { compileSecrets, createSecretMasker, type SecretAutomaton } from '../../queue/index.ts';
import {
  createLogger,
  ensurePool,
  HostConfig,
  ImageNotFoundError,
  parseConfig,
  poolLayout,
} from '../../src/core/index.ts';
import {
  createJobLauncher,
  createRuncRuntime,
  createWarmPool,
  runtimeOptionsFrom,
  startOrphanWatch,
} from '../../workers/index.ts';
import { machine, ms, summarize } from './stats.ts';

const RUNS = Number(process.env.ARCHWAY_BENCH_RUNS ?? 7);
const OUTPUT_MB = 32;

function automatonBytes(a: SecretAutomaton): number {
  return (
    a.edge.byteLength +
    a.chain.byteLength +
    a.fail.byteLength +
    a.out.byteLength +
    a.depth.byteLength +
    a.root.byteLength +
    a.extra.size * 16
  );
}

/** Coloured build-log lines, with one of the secrets printed now and then. */
function ordinaryOutput(secrets: string[]): Buffer {
  const lines: string[] = [];
  let size = 0;
  for (let i = 0; size < OUTPUT_MB * 1e6; i++) {
    const l =
      i % 5000 === 0
        ? `token: ${secrets[i % secrets.length]}\n`
        : `\x1b[32m  CC\x1b[0m  src/module-${i}.o -O2 -Wall -Wextra -fPIC -DVERSION=${i}\n`;
    lines.push(l);
    size += l.length;
  }
  return Buffer.from(lines.join(''));
}

function maskRun(a: SecretAutomaton, data: Buffer): number {
  const m = createSecretMasker(a);
  const t0 = performance.now();
  // As the log writer feeds it: pipe reads of 64 KiB, a take per 16 KiB chunk.
  for (let i = 0; i < data.length; i += 65_536) {
    m.write(data.subarray(i, i + 65_536));
    m.take(false);
  }
  m.take(true);
  return performance.now() - t0;
}

async function pss(pid: number): Promise<number> {
  const t = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => '');
  return Number(/^Pss:\s+(\d+) kB/m.exec(t)?.[1] ?? 0);
}

async function children(pid: number): Promise<number[]> {
  const t = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
  return t.split(' ').filter(Boolean).map(Number);
}

async function main(): Promise<void> {
  const out: string[] = [];
  out.push(`Machine: ${await machine()}. ${RUNS} runs per row; milliseconds unless said.`, '');
  out.push(
    `### Masker (${OUTPUT_MB} MB of output per run)`,
    '',
    '| secrets of 64 KiB | build ms | automaton MiB | output | p50 ms | min | max | MB/s at p50 |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  );
  for (const count of [1, 10, 100]) {
    const secrets = Array.from({ length: count }, () => randomBytes(48 * 1024).toString('base64'));
    const b0 = performance.now();
    const a = compileSecrets(secrets);
    const buildMs = performance.now() - b0;
    // Worst case: every byte extends a near-miss of the first secret, which the output never completes.
    const first = secrets[0] as string;
    const nearMiss = Buffer.from(
      `${first.slice(0, -1)}#\n`.repeat(Math.ceil((OUTPUT_MB * 1e6) / first.length)),
    );
    for (const [name, data] of [
      ['coloured log', ordinaryOutput(secrets)],
      ['near-misses', nearMiss],
    ] as const) {
      const s = summarize(Array.from({ length: RUNS }, () => maskRun(a, data)));
      out.push(
        `| ${count} | ${ms(buildMs)} | ${(automatonBytes(a) / 2 ** 20).toFixed(1)} | ${name} | ${ms(s.p50)} | ${ms(s.min)} | ${ms(s.max)} | ${(data.length / 1e6 / (s.p50 / 1000)).toFixed(0)} |`,
      );
    }
  }

  // The orphan watcher: started per exec against a live process standing in for a container's init.
  const init = spawn('sleep', ['600'], { stdio: 'ignore' });
  const initPid = init.pid as number;
  const stat = await readFile(`/proc/${initPid}/stat`, 'utf8');
  const initStart = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  const startMs: number[] = [];
  const pssKb: number[] = [];
  const watchers: number[] = [];
  for (let i = 0; i < RUNS * 3; i++) {
    const t0 = performance.now();
    const pid = startOrphanWatch({ initPid, initStart, killAt: Date.now() + 3_600_000 });
    startMs.push(performance.now() - t0);
    if (pid) watchers.push(pid);
  }
  await new Promise((r) => setTimeout(r, 500));
  for (const w of watchers) {
    let kb = await pss(w);
    for (const c of await children(w)) kb += await pss(c);
    pssKb.push(kb);
  }
  for (const w of watchers) {
    for (const c of await children(w)) process.kill(c, 'SIGKILL');
    process.kill(w, 'SIGKILL');
  }
  init.kill('SIGKILL');
  const st = summarize(startMs);
  const sm = summarize(pssKb);
  out.push(
    '',
    `### Orphan watcher (${startMs.length} watchers)`,
    '',
    '| what | p50 | min | max |',
    '| --- | --- | --- | --- |',
    `| start (spawn, in the worker's event loop), ms | ${ms(st.p50)} | ${ms(st.min)} | ${ms(st.max)} |`,
    `| memory per container (PSS of sh + sleep), KiB | ${sm.p50} | ${sm.min} | ${sm.max} |`,
  );
  if (process.getuid?.() === 0) out.push('', ...(await launchCost()));
  console.log(out.join('\n'));
}

/** Warm launches with and without a job timeout (the watcher), alternating. */
async function launchCost(): Promise<string[]> {
  const env: Record<string, string | undefined> = {
    ARCHWAY_POOL_PATH: '/var/lib/archway-bench',
    ARCHWAY_RUN_DIR: '/run/archway-bench',
    ARCHWAY_CGROUP_PARENT: 'archway-bench',
    ARCHWAY_LOG_LEVEL: 'warn',
    ...process.env,
  };
  const n = Number(env.ARCHWAY_BENCH_LAUNCHES ?? 40);
  const config = parseConfig(HostConfig, env);
  const logger = createLogger({ name: 'bench', level: config.ARCHWAY_LOG_LEVEL });
  await ensurePool({ path: config.ARCHWAY_POOL_PATH, loopSizeGiB: 16, logger });
  const store = createImageStore({ poolPath: config.ARCHWAY_POOL_PATH });
  await store.resolve('busybox', 'amd64').catch(async (e: unknown) => {
    if (!(e instanceof ImageNotFoundError)) throw e;
    await buildImage('busybox', 'amd64', {
      store,
      cacheDir: poolLayout(config.ARCHWAY_POOL_PATH).cache,
      idBase: config.ARCHWAY_UID_BASE,
      mirror: config.ARCHWAY_DEBIAN_MIRROR,
      logger,
    });
  });
  const runtime = await createRuncRuntime(runtimeOptionsFrom(config, 'amd64', logger));
  await runtime.reap({});
  const limits = { cpus: 1, memoryMiB: 256, pids: 256, diskMiB: 1024 };
  const warmPool = createWarmPool({ runtime, images: store, targets: { busybox: 2 }, limits, logger });
  const launcher = createJobLauncher({ runtime, images: store, logger, warmPool });
  warmPool.start();
  const samples: Record<'with' | 'without', number[]> = { with: [], without: [] };
  for (let i = 0; i < 2 * n + 2; i++) {
    const kind = i % 2 === 0 ? 'with' : 'without';
    await warmPool.filled();
    const t0 = performance.now();
    const job = await launcher.launch({
      jobId: `bench-watch-${i}`,
      image: 'busybox',
      argv: ['echo', 'x'],
      limits,
      ...(kind === 'with' ? { timeoutSeconds: 600 } : {}),
    });
    const first = await new Promise<number>((r) => job.output.once('data', () => r(performance.now() - t0)));
    job.output.resume();
    await job.result;
    if (i >= 2) samples[kind].push(first); // the first pair warms up
  }
  // A script that leaves a process holding its output: the job's duration (exec -> end) against
  // a plain one; the difference is the 100 ms grace plus seeing the exit (a 20 ms poll).
  const durations: Record<'background' | 'plain', number[]> = { background: [], plain: [] };
  for (let i = 0; i < 2 * Math.min(n, 20); i++) {
    const kind = i % 2 === 0 ? 'background' : 'plain';
    await warmPool.filled();
    const job = await launcher.launch({
      jobId: `bench-bg-${i}`,
      image: 'busybox',
      argv: ['/bin/sh', '-c', kind === 'background' ? '(sleep 1000 &); echo started' : 'echo started'],
      limits,
      timeoutSeconds: 600,
    });
    job.output.resume();
    const r = await job.result;
    if (r.exitCode !== 0 || r.reason) throw new Error(`bench-bg-${i}: exit ${r.exitCode} ${r.reason ?? ''}`);
    durations[kind].push(r.durationMs);
  }
  await launcher.close();
  const lines = [
    `### Launch with and without the orphan watcher (amd64, warm, ${n} launches each, alternating; ms)`,
    '',
    '| job timeout | min | p50 | p90 | max |',
    '| --- | --- | --- | --- | --- |',
  ];
  for (const kind of ['with', 'without'] as const) {
    const s = summarize(samples[kind]);
    lines.push(
      `| ${kind === 'with' ? '600 s (watcher started)' : 'none (no watcher)'} | ${ms(s.min)} | ${ms(s.p50)} | ${ms(s.p90)} | ${ms(s.max)} |`,
    );
  }
  lines.push(
    '',
    `### A job that leaves a background process holding its output (amd64, warm, ${durations.plain.length} each; ms from exec to the job's end)`,
    '',
    '| script | min | p50 | p90 | max |',
    '| --- | --- | --- | --- | --- |',
  );
  for (const kind of ['background', 'plain'] as const) {
    const s = summarize(durations[kind]);
    lines.push(
      `| ${kind === 'background' ? '`(sleep 1000 &); echo started`' : '`echo started`'} | ${ms(s.min)} | ${ms(s.p50)} | ${ms(s.p90)} | ${ms(s.max)} |`,
    );
  }
  return lines;
}

await main();
