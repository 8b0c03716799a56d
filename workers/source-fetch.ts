import { lstat, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import type { Redis } from 'ioredis';
import { createSourceCredentials } from '../queue/index.ts';
import {
  AbortedError,
  checkSourceUrl,
  exists,
  sourceGitEnv as gitEnv,
  HOST_ENV,
  HostCommandError,
  InvalidInputError,
  type JobSpec,
  type Keys,
  type Logger,
  parseSourceUrl,
  pinSourceUrl,
  poolLayout,
  runCommand,
  type SourceResolver,
  type SourceUrl,
  sourceBuildDir,
  uploadSourcePolicy,
} from '../src/core/index.ts';
import { holdMirror } from './mirror-sweep.ts';
import { SourceFetchError } from './source-fetch-error.ts';

export interface SourceFetcherOptions {
  /** The btrfs pool: mirrors live in `<pool>/cache/git/<host>/<path>.git`. */
  poolPath: string;
  /** Allow sources on this host's loopback (and plain http to them); for tests. Default false. */
  allowLoopback?: boolean;
  /** The operator's allow-list of private git servers (ARCHWAY_SOURCE_ALLOW). Default none. */
  allow?: readonly string[];
  /** How host names are resolved at connect time. Default: the system's resolver. */
  resolve?: SourceResolver;
  /** Where a job's short-lived credential is read from (`keys.sourceCredential(jobId)`). */
  redis: Redis;
  keys: Keys;
  logger: Logger;
}

/** What placing one job's source took. */
export interface PlacedSource {
  /** Where the tree is in the container, and where the job starts. */
  buildDir: string;
  sha: string;
  /** True when the mirror already held the commit: nothing was fetched. */
  mirrorHit: boolean;
  fetchMs: number;
  placeMs: number;
}

export interface SourceFetcher {
  /** The directory the source of `source` goes to in the container (`/root/build/<owner>/<name>`). */
  buildDirOf(source: NonNullable<JobSpec['source']>): string;
  /**
   * Brings the commit into the host's mirror (fetching only what it lacks) and writes its tree
   * into the container's root filesystem at the build directory, owned by container root.
   */
  place(o: {
    jobId: string;
    source: NonNullable<JobSpec['source']>;
    rootfs: string;
    /** Host uid and gid of the container's root: the placed tree is owned by it. */
    idBase: number;
    signal: AbortSignal;
  }): Promise<PlacedSource>;
}

/** Longest one git command may take. */
const GIT_TIMEOUT_MS = 10 * 60_000;

/**
 * Fetches jobs' sources on the host side into a per-host bare mirror, and places the tree in a
 * container. The token (for webhook jobs) is read from Redis, handed to git in its environment
 * (never in argv, a URL, the mirror's config or the log) and never enters the container.
 */
export function createSourceFetcher(o: SourceFetcherOptions): SourceFetcher {
  const policy = { allowLoopback: o.allowLoopback ?? false, allow: o.allow ?? [] };
  /** An uploaded tree's URL is the API's own (written by the API): fetched wherever the API is. */
  const policyOf = (source: NonNullable<JobSpec['source']>) =>
    source.upload ? uploadSourcePolicy(source.git) : policy;
  const credentials = createSourceCredentials(o.redis, o.keys);

  const layout = poolLayout(o.poolPath);
  function mirrorOf(src: SourceUrl): string {
    return join(layout.gitMirrorsOf(src.host), `${src.path}.git`);
  }

  /** git with an explicit environment (see gitEnv); `auth` adds the Authorization header for one host. */
  function git(args: string[], signal: AbortSignal, auth?: [string, string]) {
    return runCommand('git', args, {
      env: gitEnv(policy.allowLoopback, auth ? [auth] : []),
      signal,
      timeoutMs: GIT_TIMEOUT_MS,
      label: `git ${args.find((a) => !a.startsWith('-') && !a.startsWith('/')) ?? ''}`.trim(),
    });
  }

  async function credentialFor(jobId: string, src: SourceUrl): Promise<string | undefined> {
    const c = await credentials.get(jobId);
    // A token is only ever sent to the host it was made for, over https (http: loopback tests only).
    if (!c || c.host !== src.host) return undefined;
    if (src.url.protocol !== 'https:' && !(policy.allowLoopback && src.url.protocol === 'http:'))
      return undefined;
    return c.token;
  }

  async function hasCommit(mirror: string, sha: string, signal: AbortSignal): Promise<boolean> {
    try {
      await git(['--git-dir', mirror, 'cat-file', '-e', `${sha}^{commit}`], signal);
      return true;
    } catch (e) {
      if (e instanceof AbortedError) throw e;
      return false;
    }
  }

  /** Makes each directory of `rel` under `root`, refusing a symlink on the way (it could point out of the container). */
  async function makeDirs(root: string, rel: string, idBase: number): Promise<string> {
    let cur = root;
    for (const part of rel.split('/').filter(Boolean)) {
      cur = join(cur, part);
      const st = await lstat(cur).catch(() => undefined);
      if (st?.isSymbolicLink() || (st && !st.isDirectory())) {
        throw new SourceFetchError(`${rel}: /${cur.slice(root.length + 1)} in the image is not a directory`, {
          infra: false,
        });
      }
      if (!st) {
        await mkdir(cur, { mode: 0o755 });
        await runCommand('chown', ['-h', `${idBase}:${idBase}`, cur]);
      }
    }
    return cur;
  }

  return {
    buildDirOf(source) {
      return sourceBuildDir(parseSourceUrl(source.git, policyOf(source)).path);
    },
    async place({ jobId, source, rootfs, idBase, signal }) {
      // Resolved and checked again here, at connect time, and git connects to exactly the checked
      // address: a name that resolved to a public address at submission may not now (DNS rebinding).
      // An uploaded tree is fetched from the API wherever the API is (the API wrote its URL).
      const policy = policyOf(source);
      const src = await checkSourceUrl(source.git, policy, 'source.git', o.resolve).catch((e: unknown) => {
        if (e instanceof InvalidInputError) throw new SourceFetchError(e.message, { infra: false, cause: e });
        throw e;
      });
      const pin = pinSourceUrl(src);
      const mirror = mirrorOf(src);
      const buildDir = sourceBuildDir(src.path);
      const t0 = performance.now();
      await mkdir(dirname(mirror), { recursive: true, mode: 0o700 });
      // Held until the tree is placed: the mirror sweep never removes a mirror a job uses.
      const release = await holdMirror(mirror, signal);
      try {
        const lock = `${mirror}.lock`;
        let sha = source.sha;
        let mirrorHit = false;
        const token = await credentialFor(jobId, src);
        // Scoped to this host's URLs: git sends it nowhere else, not even on a redirect.
        const auth: [string, string] | undefined = token
          ? [
              `http.${src.url.protocol}//${src.url.host}/.extraHeader`,
              `Authorization: Basic ${Buffer.from(`x-access-token:${token}`).toString('base64')}`,
            ]
          : undefined;
        const remoteEnv = gitEnv(policy.allowLoopback, [...pin.config, ...(auth ? [auth] : [])]);
        // One fetch at a time per mirror, across processes (the workers of each arch share the pool).
        const fetchUnderLock = async (refspec: string) => {
          const what = refspec.replace(/^\+/, '').split(':')[0];
          // The mirror's access record changes under the same lock as the fetch: what a credential
          // fetches may be private, so the record is cleared before it; a fetch with no credential
          // proves anyone may read the repository, so it says public after it.
          await runCommand(
            'flock',
            [
              '-w',
              '600',
              lock,
              'sh',
              '-c',
              RECORD_AROUND,
              'archway-fetch',
              token ? 'unknown' : '',
              token ? '' : 'public',
              join(mirror, ACCESS_FILE),
              'git',
              '--git-dir',
              mirror,
              'fetch',
              '--quiet',
              '--no-tags',
              '--no-write-fetch-head',
              pin.url,
              refspec,
            ],
            { env: remoteEnv, signal, timeoutMs: GIT_TIMEOUT_MS, label: 'git fetch' },
          ).catch((e: unknown) => {
            if (e instanceof HostCommandError) {
              // The server said the repository or the ref is not there: no retry makes it appear.
              // Anything else (no route, refused, a 5xx, a timeout) may pass: retried.
              throw new SourceFetchError(`fetching ${what} from ${src.url.href}: ${e.message}`, {
                infra: !ABSENT.test(e.message),
                cause: e,
              });
            }
            throw e;
          });
        };
        if (!(await exists(join(mirror, 'HEAD'), { noFollow: true }))) {
          await runCommand('flock', ['-w', '600', lock, 'git', 'init', '--bare', '--quiet', mirror], {
            env: gitEnv(policy.allowLoopback),
            signal,
          });
        }
        if (sha && (await hasCommit(mirror, sha, signal))) {
          mirrorHit = true;
          // A job without a credential gets a commit from the mirror only if the repository is
          // public: recorded by an anonymous fetch, or proven now by an anonymous ls-remote. A
          // webhook job's commit of a private repository is never served to an API job.
          if (!token && (await readAccess(mirror)) !== 'public') {
            try {
              await runCommand('git', ['ls-remote', '--quiet', pin.url, 'HEAD'], {
                env: remoteEnv,
                signal,
                timeoutMs: GIT_TIMEOUT_MS,
                label: 'git ls-remote',
              });
            } catch (e) {
              if (e instanceof AbortedError) throw e;
              throw new SourceFetchError(
                `${src.url.href} cannot be read without a credential, and this job holds none for it: its commits in this host's mirror are not served to it`,
                { infra: false, cause: e },
              );
            }
            await writeAccess(mirror, 'public');
          }
        } else {
          if (source.ref) {
            const ref = source.ref.startsWith('refs/') ? source.ref : `refs/heads/${source.ref}`;
            await fetchUnderLock(`+${ref}:refs/archway/${ref.slice('refs/'.length)}`);
            if (!sha) {
              sha = (
                await git(
                  ['--git-dir', mirror, 'rev-parse', `refs/archway/${ref.slice('refs/'.length)}^{commit}`],
                  signal,
                )
              ).trim();
            }
          }
          if (sha && !(await hasCommit(mirror, sha, signal))) {
            await fetchUnderLock(`+${sha}:refs/archway/commits/${sha}`);
          }
          if (!sha) {
            await fetchUnderLock('+HEAD:refs/archway/HEAD');
            sha = (
              await git(['--git-dir', mirror, 'rev-parse', 'refs/archway/HEAD^{commit}'], signal)
            ).trim();
          }
          if (!(await hasCommit(mirror, sha, signal))) {
            throw new SourceFetchError(`${src.url.href} has no commit ${sha}`, { infra: false });
          }
        }
        const fetchMs = Math.round(performance.now() - t0);
        const t1 = performance.now();
        const dest = await makeDirs(rootfs, buildDir, idBase);
        const archive = execa('git', ['--git-dir', mirror, 'archive', '--format=tar', sha], {
          env: gitEnv(policy.allowLoopback),
          extendEnv: false,
          cancelSignal: signal,
          stdin: 'ignore',
          reject: false,
        });
        const tar = archive.pipe(
          'tar',
          ['-x', '-f', '-', '-C', dest, '--no-same-owner', '--no-same-permissions'],
          {
            env: HOST_ENV,
            extendEnv: false,
            reject: false,
            cancelSignal: signal,
          },
        );
        const [a, t] = await Promise.all([archive, tar]);
        if (a.failed || t.failed) {
          if (signal.aborted) throw new AbortedError('placing the source', signal.reason);
          // A full disk: ENOSPC, EDQUOT, or tar's short write (what a quota-limited disk gives it).
          if (
            /No space left on device|Disk quota exceeded|Wrote only \d+ of \d+ bytes/.test(String(t.stderr))
          )
            throw new SourceFetchError(
              `the tree of ${sha} does not fit the job's disk: give the job more (resources.diskMiB)`,
              { infra: false },
            );
          throw new SourceFetchError(
            `placing ${sha} at ${buildDir}: ${String(a.stderr || t.stderr || a.shortMessage || t.shortMessage)}`,
            { infra: true },
          );
        }
        await runCommand('chown', ['-R', '-h', `${idBase}:${idBase}`, dest], { signal });
        const placeMs = Math.round(performance.now() - t1);
        o.logger.debug({ job: jobId, mirror, sha, mirrorHit, fetchMs, placeMs }, 'source placed');
        return { buildDir, sha, mirrorHit, fetchMs, placeMs };
      } finally {
        release();
      }
    },
  };
}

/**
 * What git prints when the server answered that the repository or the ref does not exist (smart
 * HTTP's 404/410, git-daemon's refusal, a ref the remote lacks), as opposed to one it could not
 * reach; only these fail a job at once.
 */
const ABSENT =
  /repository '[^']*' not found|Repository not found|The requested URL returned error: (404|410)|does not appear to be a git repository|not exported|couldn't find remote ref/;

type MirrorAccess = 'public' | 'unknown';
const ACCESS_FILE = 'archway-access';

/** Writes $1 (if set) to the file $3, runs the rest, then writes $2 (if set) when it succeeded. */
const RECORD_AROUND = `pre=$1 post=$2 file=$3; shift 3
[ -z "$pre" ] || printf '%s\\n' "$pre" > "$file" || exit 1
"$@" || exit $?
[ -z "$post" ] || printf '%s\\n' "$post" > "$file"`;

/** Whether the mirror's repository was public when last fetched (see place()). */
async function readAccess(mirror: string): Promise<MirrorAccess> {
  const t = await readFile(join(mirror, ACCESS_FILE), 'utf8').catch(() => '');
  return t.trim() === 'public' ? 'public' : 'unknown';
}

async function writeAccess(mirror: string, access: MirrorAccess): Promise<void> {
  const tmp = join(mirror, `${ACCESS_FILE}.${process.pid}.${Math.random().toString(36).slice(2)}`);
  await writeFile(tmp, `${access}\n`, { mode: 0o600 });
  await rename(tmp, join(mirror, ACCESS_FILE));
}
