import { readFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { runCommand } from '../../src/core/index.ts';

export interface Summary {
  n: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export function summarize(samples: number[]): Summary {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? Number.NaN;
  return {
    n: s.length,
    min: s[0] ?? Number.NaN,
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    max: s.at(-1) ?? Number.NaN,
  };
}

export const ms = (n: number) => `${n.toFixed(1)}`;

/** A line describing the machine the figures come from. */
export async function machine(): Promise<string> {
  const kernel = (await readFile('/proc/sys/kernel/osrelease', 'utf8')).trim();
  const runc = (await runCommand('runc', ['--version']).catch(() => '')).split('\n')[0] ?? '';
  return `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${kernel}, ${runc}, Node ${process.version}`;
}
