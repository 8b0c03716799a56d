/** Where a build is: what `images build` shows instead of minutes of silence. */
export interface BuildProgress {
  image: string;
  arch: string;
  /** What the build does now (`downloading essential packages`, `shifting owners`, ...). */
  phase: string;
  /** Since the build started. */
  elapsedMs: number;
  /** Counters of the phase, when it has some (`fetched 37 packages, 12.3 of 40.0 MB`). */
  detail?: string;
  /** True for the last event of a phase: `detail` is its summary. */
  phaseDone?: boolean;
}

/** What the `I:` lines of mmdebstrap mean, in the builder's words; other `I:` lines are not phases. */
const PHASES: readonly [RegExp, string][] = [
  // The merged-/usr setup hook runs apt-get update itself; then mmdebstrap skips its own.
  [/^I: running (--setup-hook|special hook: sync-in)/, 'setting up (apt lists, package cache)'],
  [/^I: running apt-get update/, 'updating the apt lists'],
  [/^I: downloading packages/, 'downloading essential packages'],
  [/^I: extracting archives/, 'extracting essential packages'],
  [/^I: installing essential packages/, 'installing essential packages'],
  [/^I: running --essential-hook/, 'running the essential hooks'],
  [/^I: installing remaining packages/, "installing the recipe's packages"],
  [/^I: running (--customize-hook|special hook: sync-out)/, 'running the customize hooks'],
  [/^I: cleaning package lists/, 'cleaning up'],
];

/** Phases that go on with the packages the one before counted (apt downloads, dpkg installs them). */
const CARRIES_COUNT = new Set(['extracting essential packages', 'installing essential packages']);

const UNITS: Readonly<Record<string, number>> = { B: 1, kB: 1e3, MB: 1e6, GB: 1e9 };

function bytes(n: string, unit: string): number {
  return Number(n.replace(/,/g, '')) * (UNITS[unit] ?? 1);
}

function mb(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB`;
}

/**
 * Follows mmdebstrap's `--verbose` output (its `I:` lines, and apt's and dpkg's lines) and keeps
 * the counters of the current phase: packages apt will install, packages fetched and their bytes
 * against what apt said it needs to get, packages set up.
 */
export class MmdebstrapProgress {
  phase: string | undefined;
  toInstall: number | undefined;
  neededBytes: number | undefined;
  fetched = 0;
  fetchedBytes = 0;
  setUp = 0;

  /**
   * Reads one line. Returns `phase` when it starts a phase (the counters are then the new
   * phase's, all zero), `step` when a counter moved, and undefined otherwise.
   */
  feed(line: string): 'phase' | 'step' | undefined {
    for (const [re, phase] of PHASES) {
      if (!re.test(line)) continue;
      // Several hooks in a row are one phase.
      if (phase === this.phase) return undefined;
      this.phase = phase;
      if (!CARRIES_COUNT.has(phase)) this.toInstall = undefined;
      this.neededBytes = undefined;
      this.fetched = 0;
      this.fetchedBytes = 0;
      this.setUp = 0;
      return 'phase';
    }
    let m = /^\d+ upgraded, (\d+) newly installed/.exec(line);
    if (m) {
      // apt says it twice (a simulation first), and "0 newly installed" for an upgrade in a hook.
      if (Number(m[1]) === 0) return undefined;
      this.toInstall = Number(m[1]);
      return 'step';
    }
    // "Need to get 29.7 MB of archives." or, with some in the cache, "Need to get 5,120 kB/41.0 MB of archives."
    m = /^Need to get ([\d.,]+) (B|kB|MB|GB)(?:\/[\d.,]+ (?:B|kB|MB|GB))? of archives/.exec(line);
    if (m) {
      if (this.toInstall === undefined) return undefined;
      this.neededBytes = bytes(m[1] as string, m[2] as string);
      return 'step';
    }
    m = /^Get:\d+ \S+ .*\[([\d.,]+) (B|kB|MB|GB)\]$/.exec(line);
    if (m) {
      this.fetched += 1;
      this.fetchedBytes += bytes(m[1] as string, m[2] as string);
      return 'step';
    }
    if (line.startsWith('Setting up ')) {
      this.setUp += 1;
      return 'step';
    }
    return undefined;
  }

  /** The counters of the phase in words, or undefined when it has none yet. */
  detail(): string | undefined {
    const parts: string[] = [];
    const files =
      this.phase === 'setting up (apt lists, package cache)' || this.phase === 'updating the apt lists';
    if (this.neededBytes === 0 && this.fetched === 0) {
      parts.push('nothing to fetch: all in the package cache');
    } else if (this.fetched > 0 || this.neededBytes !== undefined) {
      const of = this.neededBytes !== undefined ? ` of ${mb(this.neededBytes)}` : '';
      const what = files ? 'index file' : 'package';
      parts.push(
        `fetched ${this.fetched} ${what}${this.fetched === 1 ? '' : 's'}, ${mb(this.fetchedBytes)}${of}`,
      );
    }
    if (this.setUp > 0) {
      const of = this.toInstall !== undefined ? `/${this.toInstall}` : '';
      parts.push(`set up ${this.setUp}${of} package${this.setUp === 1 && of === '' ? '' : 's'}`);
    } else if (this.toInstall !== undefined) {
      parts.push(`${this.toInstall} packages to install`);
    }
    return parts.length > 0 ? parts.join('; ') : undefined;
  }
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`.padStart(7);
}

/** One line of progress: `[  12.3s] debian-bookworm-build/arm64: downloading ...: fetched 3 packages, ...`. */
export function formatBuildProgress(p: BuildProgress): string {
  const what = p.phaseDone ? `${p.phase}: done` : p.phase;
  return `[${seconds(p.elapsedMs)}] ${p.image}/${p.arch}: ${what}${p.detail ? `: ${p.detail}` : ''}`;
}

export interface ProgressPrinterOptions {
  write: (text: string) => void;
  /** A terminal: one live line, redrawn. Otherwise one line per phase (and a summary of phases that count). */
  tty: boolean;
  /** Least milliseconds between two redraws of the live line. Default 100. */
  redrawMs?: number;
  now?: () => number;
}

/** Prints BuildProgress events: a live line on a terminal, plain lines in a log. */
export function createProgressPrinter(o: ProgressPrinterOptions): {
  update: (p: BuildProgress) => void;
  /** Ends the live line (call before printing anything else). */
  end: () => void;
} {
  const now = o.now ?? Date.now;
  let lastDraw = 0;
  let live = false;
  return {
    update(p) {
      if (!o.tty) {
        // A log keeps phase starts and the summaries of phases that counted something.
        if (p.phaseDone ? p.detail !== undefined : p.detail === undefined)
          o.write(`${formatBuildProgress(p)}\n`);
        return;
      }
      if (p.phaseDone && p.detail === undefined) return;
      const t = now();
      if (!p.phaseDone && p.detail !== undefined && t - lastDraw < (o.redrawMs ?? 100)) return;
      lastDraw = t;
      // \r and "erase line": the line is redrawn in place; a phase's summary stays on its own line.
      o.write(`\r\x1b[2K${formatBuildProgress(p)}`);
      live = !p.phaseDone;
      if (p.phaseDone) o.write('\n');
    },
    end() {
      if (live) o.write('\n');
      live = false;
    },
  };
}
