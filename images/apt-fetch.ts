import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ARCH_INFO, type Arch, HostCommandError, runCommand } from '../src/core/index.ts';

export interface AptFetchOptions {
  /** Private apt state and the downloaded .debs live here, never in the host's own apt dirs. */
  cacheDir: string;
  mirror: string;
  suite: string;
  signal?: AbortSignal | undefined;
}

const LISTS_MAX_AGE_MS = 6 * 3600_000;

/**
 * Downloads one package of a (possibly foreign) arch from the Debian mirror, with a private apt
 * configuration: the host's dpkg architectures and sources stay as they are. Returns the .deb's
 * path; a .deb already in the cache (same file name, same size) is not downloaded again.
 */
export async function fetchDebianPackage(pkg: string, arch: Arch, o: AptFetchOptions): Promise<string> {
  const debArch = ARCH_INFO[arch].debian;
  const base = join(o.cacheDir, 'apt', o.suite);
  const debs = join(base, 'debs', debArch);
  await mkdir(join(base, 'lists', 'partial'), { recursive: true });
  await mkdir(join(base, 'archives', 'partial'), { recursive: true });
  await mkdir(debs, { recursive: true });
  const sources = join(base, 'sources.list');
  await writeFile(sources, `deb ${o.mirror} ${o.suite} main\n`);
  const apt = [
    '-q',
    '-o',
    'APT::Architectures=amd64,arm64,ppc64el,s390x',
    '-o',
    `Dir::State::Lists=${join(base, 'lists')}`,
    '-o',
    `Dir::Cache=${base}`,
    '-o',
    `Dir::Etc::SourceList=${sources}`,
    '-o',
    'Dir::Etc::SourceParts=/nonexistent',
    '-o',
    'Debug::NoLocking=1',
    '-o',
    'APT::Sandbox::User=root',
  ];
  const ctl = { signal: o.signal, timeoutMs: 300_000 };
  if (await isStale(join(base, 'lists'))) await runCommand('apt-get', [...apt, 'update'], ctl);
  const uris = await runCommand(
    'apt-get',
    [...apt, 'download', '--print-uris', `${pkg}:${debArch}`],
    ctl,
  ).catch(async (e: unknown) => {
    if (!(e instanceof HostCommandError)) throw e;
    // The lists may be older than the mirror; refresh once and ask again.
    await runCommand('apt-get', [...apt, 'update'], ctl);
    return runCommand('apt-get', [...apt, 'download', '--print-uris', `${pkg}:${debArch}`], ctl);
  });
  const m = uris.match(/^'[^']+' (\S+\.deb) (\d+) /m);
  if (!m?.[1])
    throw new HostCommandError(
      `apt-get download ${pkg}:${debArch}`,
      undefined,
      `no download for ${pkg}:${debArch} in ${o.mirror} ${o.suite}`,
    );
  const file = join(debs, m[1]);
  const size = await stat(file)
    .then((s) => s.size)
    .catch(() => -1);
  if (size !== Number(m[2]))
    await runCommand('apt-get', [...apt, 'download', `${pkg}:${debArch}`], { ...ctl, cwd: debs });
  return file;
}

async function isStale(lists: string): Promise<boolean> {
  const files = (await readdir(lists)).filter((f) => f.endsWith('Packages') || f.includes('Packages.'));
  if (files.length === 0) return true;
  const first = files[0] as string;
  const age = Date.now() - (await stat(join(lists, first))).mtimeMs;
  return age > LISTS_MAX_AGE_MS;
}
