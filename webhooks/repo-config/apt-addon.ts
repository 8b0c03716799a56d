import type { KeyPath, YamlValue } from './load-yaml.ts';

/** An apt source a job adds before it installs its packages. */
export interface AptSource {
  /** A `deb ...` / `deb-src ...` line, as written. */
  sourceline: string;
  /** Where the source's signing key is fetched from (http or https). */
  keyUrl?: string;
}

/** What `addons.apt` asks of a job: run before `before_install`, as Travis did. */
export interface AptAddon {
  /** Packages to install, nested lists flattened, duplicates dropped, in order. */
  packages: string[];
  /** `addons.apt.update: true`: run `apt-get update` even without packages. */
  update: boolean;
  /** Sources added (and their keys trusted) before `apt-get update`. */
  sources: AptSource[];
}

/** A part of `addons` that is read and not applied, with why. */
export interface IgnoredAddon {
  /** The key it is listed under (`addons.apt.sources`, `addons.ssh_known_hosts`). */
  key: string;
  reason: string;
  path: KeyPath;
}

/** A value in `addons` that archway refuses: where it is, and what is wrong. */
export class AddonIssue extends Error {
  constructor(
    readonly path: KeyPath,
    readonly detail: string,
  ) {
    super(detail);
    this.name = 'AddonIssue';
  }
}

/** What an `addons:` value asks for. */
export interface AddonsReading {
  /** Undefined when `addons` asks apt for nothing. */
  apt?: AptAddon;
  ignored: IgnoredAddon[];
}

/**
 * A Debian package name (policy 5.6.1), optionally with `:arch`, `=version` or `/release`:
 * every form `apt-get install` takes. Anything else is refused, so nothing a config writes
 * reaches the shell as more than one word.
 */
const PACKAGE = /^[a-z0-9][a-z0-9+.-]*(:[a-z0-9-]+)?(=[A-Za-z0-9.+~:-]+|\/[a-z0-9.-]+)?$/;

/** A `deb` or `deb-src` line: type, optional `[options]`, URI, suite, components. */
const SOURCELINE = /^deb(-src)?\s+(\[[^\][\n]*\]\s+)?([a-z][a-z0-9+.-]*:\/\/\S+)\s+(\S+)(\s+\S+)*$/;

/** Ubuntu's releases since Travis's first Linux images: a source for one of them is not for Debian. */
const UBUNTU_SUITES = new Set([
  'precise',
  'trusty',
  'xenial',
  'bionic',
  'focal',
  'jammy',
  'noble',
  'cosmic',
  'disco',
  'eoan',
  'groovy',
  'hirsute',
  'impish',
  'kinetic',
  'lunar',
  'mantic',
]);

const UBUNTU_HOSTS = /(^|\.)(ubuntu\.com|launchpad\.net|launchpadcontent\.net)$/i;

const PPA_REASON =
  'an Ubuntu PPA (Launchpad): its packages are built for Ubuntu releases, not for Debian, and archway does not guess a Debian equivalent: not added';
const ALIAS_REASON =
  "a name from Travis's list of source aliases for its Ubuntu images: archway does not map these to Debian sources: not added; write the Debian repository as {sourceline: 'deb URL SUITE COMPONENT', key_url: URL}";

function isMapping(v: YamlValue | undefined): v is { [key: string]: YamlValue } {
  return v !== null && v !== undefined && typeof v === 'object' && !Array.isArray(v);
}

function describe(v: YamlValue | undefined): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `'${v}'`;
  return String(v);
}

/** The packages of a list (nested lists flattened, nulls dropped), each checked. */
function packagesOf(v: YamlValue | undefined, path: KeyPath): string[] {
  const out: string[] = [];
  const walk = (node: YamlValue | undefined, at: KeyPath) => {
    if (node === null || node === undefined) return;
    if (Array.isArray(node)) {
      node.forEach((item, i) => {
        walk(item, [...at, i]);
      });
      return;
    }
    if (typeof node !== 'string') {
      throw new AddonIssue(at, `expected a Debian package name, got ${describe(node)}`);
    }
    const name = node.trim();
    if (!PACKAGE.test(name)) {
      throw new AddonIssue(
        at,
        `'${node}' is not a Debian package name (lower case letters, digits, + - .; optionally :arch, =version or /release)`,
      );
    }
    if (!out.includes(name)) out.push(name);
  };
  walk(v, path);
  return out;
}

function readBool(v: YamlValue | undefined, path: KeyPath): boolean {
  if (v === null || v === undefined) return false;
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string') {
    const s = v.trim().toLowerCase();
    if (['true', 'yes', 'on'].includes(s)) return true;
    if (['false', 'no', 'off', ''].includes(s)) return false;
  }
  throw new AddonIssue(path, `expected true or false, got ${describe(v)}`);
}

/** Why a Debian-shaped sourceline is not added, or undefined when it is. */
function sourcelineProblem(line: string): string | undefined {
  const m = SOURCELINE.exec(line);
  if (!m) return undefined;
  const uri = m[3] as string;
  const suite = (m[4] as string).replace(/\/$/, '');
  let host = '';
  try {
    host = new URL(uri).hostname;
  } catch {
    return `'${uri}' is not a URL`;
  }
  if (UBUNTU_HOSTS.test(host))
    return `${host} is an Ubuntu archive: its packages are built for Ubuntu, not for Debian: not added`;
  const release = suite.split(/[-/]/)[0] ?? suite;
  if (UBUNTU_SUITES.has(release) || [...UBUNTU_SUITES].some((u) => suite.includes(`-${u}`))) {
    return `the suite '${suite}' is an Ubuntu release: its packages are built for Ubuntu, not for Debian: not added`;
  }
  return undefined;
}

function readSource(v: YamlValue, path: KeyPath, ignored: IgnoredAddon[]): AptSource | undefined {
  const key = 'addons.apt.sources';
  if (typeof v === 'string') {
    const s = v.trim();
    if (s.startsWith('ppa:')) {
      ignored.push({ key, reason: `${s}: ${PPA_REASON}`, path });
      return undefined;
    }
    if (/^deb(-src)?\s/.test(s)) return readSource({ sourceline: s }, path, ignored);
    ignored.push({ key, reason: `${s}: ${ALIAS_REASON}`, path });
    return undefined;
  }
  if (!isMapping(v)) {
    throw new AddonIssue(path, `expected a source alias or {sourceline, key_url}, got ${describe(v)}`);
  }
  const line = v.sourceline;
  if (typeof line !== 'string' || line.trim() === '') {
    throw new AddonIssue(
      [...path, 'sourceline'],
      `expected a 'deb URL SUITE COMPONENT' line, got ${describe(line)}`,
    );
  }
  const sourceline = line.trim();
  if (sourceline.startsWith('ppa:')) {
    ignored.push({ key, reason: `${sourceline}: ${PPA_REASON}`, path });
    return undefined;
  }
  if (!SOURCELINE.test(sourceline)) {
    throw new AddonIssue(
      [...path, 'sourceline'],
      `'${sourceline}' is not an apt source line: expected 'deb [options] URL SUITE COMPONENT...' (one line)`,
    );
  }
  const problem = sourcelineProblem(sourceline);
  if (problem !== undefined) {
    ignored.push({ key, reason: `${sourceline}: ${problem}`, path });
    return undefined;
  }
  const source: AptSource = { sourceline };
  const keyUrl = v.key_url;
  if (keyUrl !== undefined && keyUrl !== null) {
    let url: URL | undefined;
    try {
      url = typeof keyUrl === 'string' ? new URL(keyUrl.trim()) : undefined;
    } catch {
      url = undefined;
    }
    if (!url || !['http:', 'https:'].includes(url.protocol) || /[\s'"\\]/.test(String(keyUrl).trim())) {
      throw new AddonIssue(
        [...path, 'key_url'],
        `expected an http or https URL of the key, got ${describe(keyUrl)}`,
      );
    }
    source.keyUrl = String(keyUrl).trim();
  }
  for (const k of Object.keys(v)) {
    if (!['sourceline', 'key_url', 'name', 'alias'].includes(k)) {
      ignored.push({ key, reason: `${k}: not a key of an apt source; ignored`, path: [...path, k] });
    }
  }
  return source;
}

/**
 * Reads an `addons:` value: `apt` (a list of packages, or `{packages, sources, update}`), or the
 * old `apt_packages`. Other add-ons are listed as ignored. Throws AddonIssue, with the path under
 * `at`, for a value archway cannot use (a package name that is not one, a malformed source).
 */
export function readAddons(addons: YamlValue | undefined, at: KeyPath): AddonsReading {
  const ignored: IgnoredAddon[] = [];
  if (addons === null || addons === undefined) return { ignored };
  if (!isMapping(addons)) {
    throw new AddonIssue(
      at,
      `expected a mapping of add-ons such as {apt: {packages: [...]}}, got ${describe(addons)}`,
    );
  }
  const packages: string[] = [];
  const sources: AptSource[] = [];
  let update = false;
  let asked = false;
  for (const [name, value] of Object.entries(addons)) {
    const path = [...at, name];
    if (name === 'apt_packages') {
      asked = true;
      for (const p of packagesOf(value, path)) if (!packages.includes(p)) packages.push(p);
      continue;
    }
    if (name !== 'apt') {
      ignored.push({ key: `addons.${name}`, reason: 'this add-on is not set up', path });
      continue;
    }
    if (value === null || value === undefined) continue;
    asked = true;
    if (Array.isArray(value) || typeof value === 'string') {
      for (const p of packagesOf(value, path)) if (!packages.includes(p)) packages.push(p);
      continue;
    }
    if (!isMapping(value)) {
      throw new AddonIssue(
        path,
        `expected a list of packages or {packages, sources, update}, got ${describe(value)}`,
      );
    }
    for (const [k, v] of Object.entries(value)) {
      const p = [...path, k];
      if (k === 'packages') {
        for (const pkg of packagesOf(v, p)) if (!packages.includes(pkg)) packages.push(pkg);
      } else if (k === 'update') {
        update = readBool(v, p);
      } else if (k === 'sources') {
        const list: YamlValue[] = v === null ? [] : Array.isArray(v) ? v : [v];
        list.forEach((s, i) => {
          if (s === null) return;
          const source = readSource(s, Array.isArray(v) ? [...p, i] : p, ignored);
          if (source) sources.push(source);
        });
      } else {
        const reason =
          k === 'config'
            ? 'apt configuration from the config is not applied'
            : k === 'allow_unauthenticated'
              ? 'unsigned packages are not allowed'
              : 'not a key of addons.apt; ignored';
        ignored.push({ key: `addons.apt.${k}`, reason, path: p });
      }
    }
  }
  if (!asked || (packages.length === 0 && sources.length === 0 && !update)) return { ignored };
  return { apt: { packages, update, sources }, ignored };
}
