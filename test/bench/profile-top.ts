/**
 * The top frames of V8 CPU profiles (`node --cpu-prof`, e.g. from ARCHWAY_BENCH_PROFILE=DIR), by
 * self time and by inclusive time, one table per profile.
 *
 *   npx tsx test/bench/profile-top.ts DIR/*.cpuprofile   (ARCHWAY_BENCH_TOP=25)
 */
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const TOP = Number(process.env.ARCHWAY_BENCH_TOP ?? 25);
const where = (n: ProfileNode) => {
  const url = n.callFrame.url.replace(/^file:\/\//, '').replace(/.*\/(node_modules|dist\/current)\//, '$1/');
  return `${n.callFrame.functionName || '(anonymous)'} ${url ? `${url}:${n.callFrame.lineNumber + 1}` : ''}`.trim();
};

for (const file of process.argv.slice(2)) {
  const p = JSON.parse(await readFile(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let all = 0;
  p.samples.forEach((id, i) => {
    const dt = (p.timeDeltas[i] ?? 0) / 1000;
    all += dt;
    const n = byId.get(id);
    if (!n) return;
    self.set(where(n), (self.get(where(n)) ?? 0) + dt);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const w = where(byId.get(cur) as ProfileNode);
      if (seen.has(w)) continue;
      seen.add(w);
      total.set(w, (total.get(w) ?? 0) + dt);
    }
  });
  const idle = self.get('(idle)') ?? 0;
  process.stdout.write(
    `\n## ${basename(file)}: ${(all / 1000).toFixed(2)} s sampled, ${((all - idle) / 1000).toFixed(2)} s not idle\n\n`,
  );
  process.stdout.write('| self ms | % of busy | frame |\n| --- | --- | --- |\n');
  for (const [w, t] of [...self]
    .filter(([w]) => w !== '(idle)')
    .sort((a, b) => b[1] - a[1])
    .slice(0, TOP))
    process.stdout.write(`| ${t.toFixed(0)} | ${((100 * t) / (all - idle)).toFixed(1)} | ${w} |\n`);
  process.stdout.write('\n| inclusive ms | frame |\n| --- | --- |\n');
  for (const [w, t] of [...total]
    .filter(([w]) => !w.startsWith('(root)') && w !== '(idle)')
    .sort((a, b) => b[1] - a[1])
    .slice(0, TOP))
    process.stdout.write(`| ${t.toFixed(0)} | ${w} |\n`);
}
