import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { type BuildProgress, createProgressPrinter, MmdebstrapProgress } from '../../images/index.ts';

/** Lines of real `mmdebstrap --verbose` runs (bookworm amd64), the I:, Get:, apt and dpkg lines kept. */
const fixture = (name: string) =>
  readFileSync(new URL(`../fixtures/mmdebstrap/${name}`, import.meta.url), 'utf8').split('\n');

/** Each phase and the counters it ended with. */
function phases(lines: string[]): [string, string | undefined][] {
  const t = new MmdebstrapProgress();
  const out: [string, string | undefined][] = [];
  for (const line of lines) {
    const prev = t.phase;
    const prevDetail = t.detail();
    if (t.feed(line) === 'phase') {
      if (prev !== undefined) out.push([prev, prevDetail]);
    }
  }
  if (t.phase !== undefined) out.push([t.phase, t.detail()]);
  return out;
}

describe('MmdebstrapProgress', () => {
  it('a cold build: the apt lists, then packages fetched with their bytes, then packages set up', () => {
    expect(phases(fixture('cold-minbase-sudo.txt'))).toEqual([
      ['updating the apt lists', 'fetched 2 index files, 8.9 MB'],
      ['downloading essential packages', 'fetched 69 packages, 29.7 MB of 29.7 MB; 69 packages to install'],
      ['extracting essential packages', '69 packages to install'],
      ['installing essential packages', 'set up 69/69 packages'],
      ["installing the recipe's packages", 'fetched 28 packages, 11.5 MB of 11.5 MB; set up 28/28 packages'],
      ['cleaning up', undefined],
    ]);
  });

  it('a rebuild: every package from the cache, hooks as phases of their own', () => {
    const p = phases(fixture('warm-debian-bookworm.txt'));
    expect(p.map(([name]) => name)).toEqual([
      'setting up (apt lists, package cache)',
      'downloading essential packages',
      'extracting essential packages',
      'installing essential packages',
      'running the essential hooks',
      "installing the recipe's packages",
      'running the customize hooks',
      'cleaning up',
    ]);
    const detail = Object.fromEntries(p);
    expect(detail['downloading essential packages']).toBe(
      'nothing to fetch: all in the package cache; 60 packages to install',
    );
    expect(detail["installing the recipe's packages"]).toBe(
      'nothing to fetch: all in the package cache; set up 29/29 packages',
    );
  });

  it('counts a partly cached download against what apt said it needs to get', () => {
    const t = new MmdebstrapProgress();
    t.feed('I: downloading packages with apt...');
    t.feed('0 upgraded, 3 newly installed, 0 to remove and 0 not upgraded.');
    t.feed('Need to get 1,500 kB/41.0 MB of archives.');
    expect(
      t.feed('Get:1 http://deb.debian.org/debian bookworm/main arm64 libc6 arm64 2.36-9 [1,200 kB]'),
    ).toBe('step');
    expect(t.detail()).toBe('fetched 1 package, 1.2 MB of 1.5 MB; 3 packages to install');
    expect(t.feed('Reading package lists...')).toBeUndefined();
  });
});

describe('createProgressPrinter', () => {
  const events = (): BuildProgress[] => {
    const base = { image: 'debian-bookworm', arch: 's390x' };
    return [
      { ...base, phase: 'downloading essential packages', elapsedMs: 1000 },
      { ...base, phase: 'downloading essential packages', elapsedMs: 1010, detail: 'fetched 1 package' },
      { ...base, phase: 'downloading essential packages', elapsedMs: 1020, detail: 'fetched 2 packages' },
      {
        ...base,
        phase: 'downloading essential packages',
        elapsedMs: 2500,
        detail: 'fetched 3 packages',
        phaseDone: true,
      },
      { ...base, phase: 'shifting owners', elapsedMs: 2600 },
      { ...base, phase: 'shifting owners', elapsedMs: 3000, phaseDone: true },
    ];
  };

  it('not a terminal: one line per phase, and the summary of a phase that counted', () => {
    let out = '';
    const p = createProgressPrinter({ tty: false, write: (s) => (out += s) });
    for (const e of events()) p.update(e);
    p.end();
    expect(out).toBe(
      '[   1.0s] debian-bookworm/s390x: downloading essential packages\n' +
        '[   2.5s] debian-bookworm/s390x: downloading essential packages: done: fetched 3 packages\n' +
        '[   2.6s] debian-bookworm/s390x: shifting owners\n',
    );
  });

  it('a terminal: one live line redrawn in place, no more often than redrawMs; summaries stay', () => {
    let out = '';
    let clock = 0;
    const p = createProgressPrinter({ tty: true, write: (s) => (out += s), redrawMs: 100, now: () => clock });
    for (const e of events()) {
      clock = e.elapsedMs;
      p.update(e);
    }
    p.end();
    const draws = out.split('\r\x1b[2K').filter(Boolean);
    expect(draws).toEqual([
      '[   1.0s] debian-bookworm/s390x: downloading essential packages',
      // 1010 and 1020 come within 100 ms of the last draw: not drawn.
      '[   2.5s] debian-bookworm/s390x: downloading essential packages: done: fetched 3 packages\n',
      '[   2.6s] debian-bookworm/s390x: shifting owners\n',
    ]);
  });
});
