/**
 * Start time of the CLI (issue #13: at most 300 ms p50 for `--version` and `jobs` against a
 * local API), beside `node -e ''` on the same machine, which bounds what any Node CLI can do.
 *
 *   npm run bench:cli   (ARCHWAY_BENCH_RUNS=20)
 *
 * Each run is a fresh process, as a user's shell starts one; the build is made first, so the
 * figures are of the compiled CLI and not of a rebuild.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { startStack } from './stack.ts';

const BIN = new URL('../../bin/archway', import.meta.url).pathname;
const RUNS = Number(process.env.ARCHWAY_BENCH_RUNS ?? 20);

function time(cmd: string, args: string[], env: Record<string, string>): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return ms;
}

function summary(name: string, samples: number[]): string {
  const s = [...samples].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? Number.NaN;
  return `${name.padEnd(34)} p50 ${q(0.5).toFixed(0).padStart(4)} ms   min ${(s[0] ?? 0).toFixed(0).padStart(4)}   p90 ${q(0.9).toFixed(0).padStart(4)}   max ${(s.at(-1) ?? 0).toFixed(0).padStart(4)}`;
}

const stack = await startStack();
try {
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    ARCHWAY_URL: stack.url,
    ARCHWAY_TOKEN: stack.token,
  };
  execFileSync(BIN, ['--version'], { env });
  const cases: [string, string, string[]][] = [
    ["node -e ''", process.execPath, ['-e', '']],
    ['bin/archway --version', BIN, ['--version']],
    ['bin/archway jobs (local API)', BIN, ['jobs', '--limit', '1']],
  ];
  process.stdout.write(`${RUNS} runs each\n`);
  for (const [name, cmd, args] of cases) {
    const samples = Array.from({ length: RUNS }, () => time(cmd, args, env));
    process.stdout.write(`${summary(name, samples)}\n`);
  }
} finally {
  await stack.close();
}
