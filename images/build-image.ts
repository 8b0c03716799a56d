import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { execa } from 'execa';
import {
  AbortedError,
  ARCH_INFO,
  type Arch,
  archSupport,
  createSubvolume,
  deleteSubvolume,
  HOST_ENV,
  HostCommandError,
  ImageNotFoundError,
  isSubvolume,
  type Logger,
  runCommand,
  setReadonly,
  toError,
} from '../src/core/index.ts';
import { fetchDebianPackage } from './apt-fetch.ts';
import { type BuildProgress, MmdebstrapProgress } from './build-progress.ts';
import type { ImageStore, ResolvedImage } from './image-store.ts';
import { loadRecipe, RECIPES_DIR, type Recipe } from './recipe.ts';
import { shiftOwners } from './shift-owners.ts';

export interface BuildImageOptions {
  store: ImageStore;
  /** Downloaded packages are kept here between builds. */
  cacheDir: string;
  /** Host uid/gid that container root maps to: the image's owners are shifted by it. */
  idBase: number;
  /** Debian mirror, e.g. http://deb.debian.org/debian. */
  mirror: string;
  logger: Logger;
  signal?: AbortSignal | undefined;
  /** Where recipes are read from. Default: the ones shipped in images/recipes. */
  recipesDir?: string;
  /**
   * Called as the build moves: each phase's start, its counters (packages fetched and set up,
   * bytes) and its end. Default: none (the logger still gets the start and end of the build).
   */
  onProgress?: ((p: BuildProgress) => void) | undefined;
  /**
   * Digests of the versions containers on the pool were made from (workers' `imagesInUseOn`).
   * With it, the build then removes the image's versions older than the current one and the one
   * before it that none uses (`pruneVersions`); without it, it keeps them all.
   */
  inUse?: (() => Promise<ReadonlySet<string>>) | undefined;
}

/** Reports the phases of one build to `onProgress`, closing each before the next starts. */
class PhaseReporter {
  #phase: string | undefined;
  #detail: string | undefined;
  readonly #started = Date.now();
  constructor(
    readonly image: string,
    readonly arch: Arch,
    readonly onProgress: ((p: BuildProgress) => void) | undefined,
  ) {}

  #emit(phase: string, detail: string | undefined, phaseDone: boolean): void {
    const p: BuildProgress = {
      image: this.image,
      arch: this.arch,
      phase,
      elapsedMs: Date.now() - this.#started,
    };
    if (detail !== undefined) p.detail = detail;
    if (phaseDone) p.phaseDone = true;
    this.onProgress?.(p);
  }

  phase(name: string): void {
    this.end();
    this.#phase = name;
    this.#detail = undefined;
    this.#emit(name, undefined, false);
  }

  step(detail: string | undefined): void {
    if (this.#phase === undefined || detail === undefined) return;
    this.#detail = detail;
    this.#emit(this.#phase, detail, false);
  }

  end(): void {
    if (this.#phase !== undefined) this.#emit(this.#phase, this.#detail, true);
    this.#phase = undefined;
  }
}

/** Versions of an image for an arch that a build keeps: the current one and the one before it. */
export const KEPT_VERSIONS = 2;

/**
 * Removes the versions of `name` for `arch` older than the KEPT_VERSIONS newest (the current one
 * and the one it replaced, which a launch that resolved it just before may still be snapshotting
 * and an incremental publish may start from) that no container on the pool was made from. A
 * rebuilt Debian image is a new version each time (its files carry the build's time): without
 * this, every rebuild kept 0.5 GB more in the pool until it was full. Failures are logged: the
 * build itself succeeded.
 */
export async function pruneVersions(
  store: ImageStore,
  name: string,
  arch: Arch,
  inUse: () => Promise<ReadonlySet<string>>,
  logger: Logger,
): Promise<string[]> {
  const versions = (await store.list())
    .filter((v) => v.name === name && v.arch === arch)
    .sort(
      (a, b) => Number(b.current) - Number(a.current) || Date.parse(b.createdAt) - Date.parse(a.createdAt),
    );
  const old = versions.slice(KEPT_VERSIONS).filter((v) => !v.current);
  if (old.length === 0) return [];
  const used = await inUse();
  const removed: string[] = [];
  for (const v of old) {
    if (used.has(v.digest)) continue;
    try {
      await store.remove(name, arch, v.digest);
      removed.push(v.digest);
      logger.info({ image: name, arch, digest: v.digest }, 'removed an old version (no container uses it)');
    } catch (e) {
      logger.warn(
        { image: name, arch, digest: v.digest, err: toError(e).message },
        'could not remove an old version',
      );
    }
  }
  return removed;
}

/**
 * Builds image `name` for `arch` from its recipe into a new read-only subvolume, with owners
 * shifted into the unprivileged range, records it (digest = sha256 of its `btrfs send` stream)
 * and makes it the current version. A failed or aborted build leaves nothing behind.
 */
export async function buildImage(name: string, arch: Arch, o: BuildImageOptions): Promise<ResolvedImage> {
  const recipe = await loadRecipe(name, o.recipesDir ?? RECIPES_DIR);
  // A foreign arch needs qemu-user for the build itself too (busybox --list, maintainer scripts).
  await archSupport(arch);
  const dir = o.store.dirOf(recipe.name, arch);
  await mkdir(dir, { recursive: true });
  const staging = join(dir, `.build-${randomBytes(6).toString('hex')}`);
  const started = Date.now();
  const progress = new PhaseReporter(recipe.name, arch, o.onProgress);
  await createSubvolume(staging);
  try {
    if (recipe.base === 'busybox') {
      progress.phase('fetching busybox-static');
      await populateBusybox(staging, recipe, arch, o);
    } else {
      progress.phase('starting mmdebstrap');
      await populateDebian(staging, recipe, arch, o, progress);
    }
    progress.phase('shifting owners');
    const { bytes } = await shiftOwners(staging, o.idBase, o.signal);
    await setReadonly(staging, true);
    progress.phase('computing the digest (btrfs send)');
    const digest = await sendDigest(staging, o.signal);
    progress.end();
    const final = join(dir, digest);
    if (await isSubvolume(final)) {
      await deleteSubvolume(staging);
    } else {
      await rename(staging, final);
    }
    const image = await o.store.commit({
      name: recipe.name,
      arch,
      digest,
      sizeBytes: bytes,
      createdAt: new Date().toISOString(),
      description: recipe.description,
    });
    o.logger.info(
      { image: recipe.name, arch, digest, sizeBytes: bytes, ms: Date.now() - started },
      'image built',
    );
    if (o.inUse) await pruneVersions(o.store, recipe.name, arch, o.inUse, o.logger);
    return image;
  } catch (e) {
    await deleteSubvolume(staging).catch((err: unknown) =>
      o.logger.error({ err, staging }, 'could not remove the staging subvolume of a failed build'),
    );
    throw e;
  }
}

async function populateBusybox(
  root: string,
  recipe: Recipe,
  arch: Arch,
  o: BuildImageOptions,
): Promise<void> {
  const deb = await fetchDebianPackage('busybox-static', arch, {
    cacheDir: o.cacheDir,
    mirror: o.mirror,
    suite: recipe.suite,
    signal: o.signal,
  });
  await runCommand('dpkg-deb', ['-x', deb, root], { signal: o.signal });
  for (const d of [
    'bin',
    'sbin',
    'usr/bin',
    'usr/sbin',
    'etc',
    'proc',
    'sys',
    'dev',
    'root',
    'home',
    'run',
    'var/tmp',
  ]) {
    await mkdir(join(root, d), { recursive: true });
  }
  await mkdir(join(root, 'tmp'), { recursive: true });
  await chmod(join(root, 'tmp'), 0o1777);
  await chmod(join(root, 'var/tmp'), 0o1777);
  await chmod(join(root, 'root'), 0o700);
  // Run the image's own busybox (through qemu-user on a foreign arch) for its applet list.
  const list = await runCommand(join(root, 'bin/busybox'), ['--list-full'], { signal: o.signal });
  for (const applet of list.split('\n').filter(Boolean)) {
    await symlink('/bin/busybox', join(root, applet)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
  }
  const files: Record<string, string> = {
    'etc/passwd': 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
    'etc/group': 'root:x:0:\nnogroup:x:65534:\n',
    'etc/hosts': '127.0.0.1 localhost\n::1 localhost\n',
    'etc/resolv.conf': '',
    'etc/os-release': `NAME="busybox"\nID=busybox\nVERSION_ID="${recipe.suite}"\nPRETTY_NAME="busybox (Debian ${recipe.suite} busybox-static, ${ARCH_INFO[arch].debian})"\n`,
  };
  for (const [f, text] of Object.entries(files)) await writeFile(join(root, f), text);
}

/**
 * What every Debian image gets in /etc: netbase's hosts (minbase has no netbase), no resolver, and
 * an apt-get update that fails when a fetch does.
 */
const DEBIAN_ETC: Record<string, string> = {
  // Without it `localhost` does not resolve (nsswitch: files dns), and jobs' test servers need it.
  hosts:
    '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n',
  // mmdebstrap copies the build host's resolv.conf in; jobs have no network, and the host's must not leak.
  'resolv.conf': '',
  // apt-get update warns and exits 0 when a source cannot be fetched, and the job goes on to fail
  // later with "Unable to locate package"; with this (apt >= 2.3) it exits 100 where it failed.
  'apt/apt.conf.d/90archway-update-errors': 'APT::Update::Error-Mode "any";\n',
};

/** The hook directories shipped in Debian's mmdebstrap package. */
const MMDEBSTRAP_HOOKS = '/usr/share/mmdebstrap/hooks';

async function populateDebian(
  root: string,
  recipe: Recipe & { base: 'debian' },
  arch: Arch,
  o: BuildImageOptions,
  progress: PhaseReporter,
): Promise<void> {
  const cache = join(o.cacheDir, 'debs', recipe.suite, ARCH_INFO[arch].debian);
  await mkdir(cache, { recursive: true });
  const cachedBefore = await countDebs(cache);
  const started = Date.now();
  const args = [
    // apt's and dpkg's own lines (Get:, Need to get, Setting up): what the progress counts.
    '--verbose',
    '--mode=root',
    `--variant=${recipe.variant}`,
    `--architectures=${ARCH_INFO[arch].debian}`,
    ...(recipe.packages.length ? [`--include=${recipe.packages.join(',')}`] : []),
    // Merged /usr by symlinks plus usr-is-merged, where the suite has it: otherwise bookworm's
    // init-system-helpers pulls in usrmerge, and with it perl and ~50 MiB a minbase does not need.
    `--hook-dir=${MMDEBSTRAP_HOOKS}/maybe-merged-usr`,
    // Keep the downloaded .debs between builds: copy them in before, out after, then empty the image's copy.
    '--skip=download/empty',
    '--skip=essential/unlink',
    `--setup-hook=mkdir -p "$1"/var/cache/apt/archives/`,
    `--setup-hook=sync-in ${cache} /var/cache/apt/archives/`,
    `--customize-hook=sync-out /var/cache/apt/archives ${cache}`,
    `--customize-hook=rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/cache/apt/archives/partial/*.deb`,
    '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/etc/hostname "$1"/etc/machine-id',
    recipe.suite,
    root,
    o.mirror,
  ];
  const tracker = new MmdebstrapProgress();
  await runMmdebstrap(args, o.signal, (line) => {
    const what = tracker.feed(line);
    if (what === 'phase' && tracker.phase !== undefined) progress.phase(tracker.phase);
    else if (what === 'step') progress.step(tracker.detail());
  });
  for (const [name, text] of Object.entries(DEBIAN_ETC)) {
    const file = join(root, 'etc', name);
    // Unlink first: writing through a symlink left by a package would land outside the image.
    await rm(file, { force: true });
    await writeFile(file, text, { flag: 'wx', mode: 0o644 });
  }
  const cachedAfter = await countDebs(cache);
  o.logger.info(
    {
      image: recipe.name,
      arch,
      cachedDebs: cachedBefore,
      downloadedDebs: cachedAfter - cachedBefore,
      ms: Date.now() - started,
    },
    'debian root populated',
  );
}

/** Lines of mmdebstrap's output an error message quotes. */
const ERROR_TAIL_LINES = 40;

/**
 * Runs mmdebstrap, handing each line of its output (stdout and stderr together) to `onLine`;
 * a failure throws HostCommandError with the last lines, where mmdebstrap and apt say why.
 */
async function runMmdebstrap(
  args: readonly string[],
  signal: AbortSignal | undefined,
  onLine: (line: string) => void,
): Promise<void> {
  const proc = execa('mmdebstrap', args, {
    env: HOST_ENV,
    extendEnv: false,
    stdin: 'ignore',
    all: true,
    buffer: false,
    reject: false,
    timeout: 3600_000,
    forceKillAfterDelay: 2000,
    ...(signal ? { cancelSignal: signal } : {}),
  });
  const tail: string[] = [];
  const lines = createInterface({ input: proc.all, crlfDelay: Number.POSITIVE_INFINITY });
  lines.on('line', (line) => {
    tail.push(line);
    if (tail.length > ERROR_TAIL_LINES) tail.shift();
    onLine(line);
  });
  const result = await proc;
  if (result.isCanceled) throw new AbortedError('mmdebstrap', signal?.reason);
  if (result.failed) {
    const why = result.timedOut
      ? 'timed out after 3600 s'
      : tail.join('\n') || (result.shortMessage ?? 'failed');
    throw new HostCommandError(`mmdebstrap ${recipeLabel(args)}`, result.exitCode, why);
  }
}

/** The suite and target of an mmdebstrap command line, for its error. */
function recipeLabel(args: readonly string[]): string {
  return args.slice(-3, -1).join(' ');
}

async function countDebs(dir: string): Promise<number> {
  return (await readdir(dir)).filter((f) => f.endsWith('.deb')).length;
}

/** sha256 of the subvolume's full `btrfs send` stream: the digest that names this version. */
async function sendDigest(path: string, signal?: AbortSignal): Promise<string> {
  const hash = createHash('sha256');
  const proc = execa('btrfs', ['send', '-q', path], {
    env: HOST_ENV,
    extendEnv: false,
    stdin: 'ignore',
    buffer: false,
    reject: false,
    ...(signal ? { cancelSignal: signal } : {}),
  });
  proc.stdout.on('data', (chunk: Buffer) => hash.update(chunk));
  let stderr = '';
  proc.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const result = await proc;
  if (result.failed) throw new HostCommandError('btrfs send', result.exitCode, stderr);
  return `sha256:${hash.digest('hex')}`;
}

/**
 * The current version of `name` for `arch`, built first when the store has none (`onBuild` is
 * told, for a line to the user). What `up`, the test setup and the benchmarks need.
 */
export async function ensureImage(
  name: string,
  arch: Arch,
  o: BuildImageOptions & { onBuild?: () => void },
): Promise<ResolvedImage> {
  try {
    return await o.store.resolve(name, arch);
  } catch (e) {
    if (!(e instanceof ImageNotFoundError)) throw e;
    o.onBuild?.();
    return buildImage(name, arch, o);
  }
}
