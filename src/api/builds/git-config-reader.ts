import { mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import PQueue from 'p-queue';
import {
  checkSourceUrl,
  HostCommandError,
  InvalidInputError,
  type Logger,
  pinSourceUrl,
  runCommand,
  type SourceResolver,
  type SourceUrlPolicy,
  sourceGitEnv,
  toError,
} from '../../core/index.ts';

export interface GitConfigReaderOptions {
  /** Who may be fetched from: the policy workers fetch jobs' sources under (ARCHWAY_SOURCE_ALLOW, loopback for tests). */
  policy: SourceUrlPolicy;
  /** Most bytes one read may write (the pack git receives); a fetch that reaches it is stopped. */
  limitBytes: number;
  /** Longest one read may take, every git command of it together, in ms. */
  timeoutMs: number;
  /** Largest config file read, in bytes (what `POST /v1/builds` takes inline). */
  maxFileBytes: number;
  /** Where each read's temporary bare repository is made (and removed). Default: the OS's temp dir. */
  scratchDir?: string | undefined;
  /** Reads at once; more wait their turn. Default 4. */
  concurrency?: number | undefined;
  /** How host names are resolved. Default: the system's resolver. */
  resolve?: SourceResolver | undefined;
  logger: Logger;
}

/** A config file read from a git source, and the commit it was read at. */
export interface GitConfig {
  sha: string;
  path: string;
  text: string;
}

export interface GitConfigReader {
  /**
   * Fetches the commit of `ref` (or `sha`, or HEAD) of `url` into a temporary bare repository,
   * shallow and without blobs where the server allows it, then reads the first of `files` at its
   * top with `cat-file` (the tree is never checked out). Refused URLs, an unreachable source, a
   * ref or sha it lacks, a fetch over the limits: InvalidInputError naming the field. `undefined`
   * when the commit has none of `files`. The repository is removed in every case.
   */
  read(o: {
    url: string;
    ref?: string | undefined;
    sha?: string | undefined;
    files: readonly string[];
  }): Promise<(GitConfig & { found: true }) | { found: false; sha: string }>;
}

/**
 * Reads a build's config from its git source on the API host, as a worker would fetch the
 * source: the same URL policy (checked, then pinned to the checked address), no credentials, no
 * prompts, no hooks, only https and git (http to loopback in tests), no redirects; bounded in
 * bytes (`prlimit --fsize` on git, whose pack is kept as one file) and in time.
 */
export function createGitConfigReader(o: GitConfigReaderOptions): GitConfigReader {
  const log = o.logger.child({ component: 'git-config-reader' });
  const allowLoopback = o.policy.allowLoopback ?? false;
  const limiter = new PQueue({ concurrency: o.concurrency ?? 4 });
  const fsize = [`--fsize=${o.limitBytes}`];

  return {
    read: (req) =>
      limiter.add(async () => {
        const src = await checkSourceUrl(req.url, o.policy, 'source.git', o.resolve);
        const pin = pinSourceUrl(src);
        const remoteEnv = sourceGitEnv(allowLoopback, [
          ...pin.config,
          // One pack file kept as it came (no loose objects): prlimit's file size bounds it.
          ['fetch.unpackLimit', '1'],
          ['transfer.unpackLimit', '1'],
        ]);
        // Local reads: no transport at all, so a partial clone never fetches a missing blob by itself.
        const localEnv = sourceGitEnv(false, [], { network: false });
        const deadline = Date.now() + o.timeoutMs;
        const left = () => Math.max(1, deadline - Date.now());
        const scratch = o.scratchDir ?? tmpdir();
        await mkdir(scratch, { recursive: true, mode: 0o700 });
        const dir = await mkdtemp(join(scratch, 'read-'));
        const repo = join(dir, 'r.git');
        const local = (args: string[], label: string) =>
          runCommand('git', ['--git-dir', repo, ...args], { env: localEnv, timeoutMs: left(), label });
        const fetch = async (args: string[], field: string, what: string) => {
          try {
            await runCommand('prlimit', [...fsize, '--', 'git', '--git-dir', repo, ...args], {
              env: remoteEnv,
              timeoutMs: left(),
              label: `git ${args[0]}`,
            });
          } catch (e) {
            if (!(e instanceof HostCommandError)) throw e;
            if (await reachedLimit(repo, o.limitBytes))
              throw new InvalidInputError(
                field,
                `reading the config from ${src.url.href} fetched more than ${o.limitBytes} bytes (ARCHWAY_CONFIG_FETCH_LIMIT_BYTES) and was stopped; give the config inline, or a source whose server allows blob filters`,
              );
            const why = gitReason(e.message);
            if (/timed out/.test(e.message))
              throw new InvalidInputError(
                field,
                `reading the config from ${src.url.href} took longer than ${o.timeoutMs / 1000} s (ARCHWAY_CONFIG_FETCH_TIMEOUT_SECONDS)`,
              );
            if (/couldn't find remote ref/i.test(why))
              throw new InvalidInputError(field, `${src.url.href} has no ${what}`);
            if (/not our ref|unadvertised object|not a valid object/i.test(why))
              throw new InvalidInputError(field, `${src.url.href} has no ${what} (or does not serve it)`);
            throw new InvalidInputError('source.git', `cannot fetch ${what} from ${src.url.href}: ${why}`);
          }
        };
        try {
          await local(['init', '--bare', '--quiet'], 'git init');
          // The commit: the sha when given (the build is of it), else the ref's tip, else HEAD.
          let field: string;
          let target: string;
          let what: string;
          if (req.sha) {
            field = 'source.sha';
            target = `+${req.sha}:refs/archway/read`;
            what = `commit ${req.sha}`;
          } else if (req.ref) {
            const ref = req.ref.startsWith('refs/') ? req.ref : `refs/heads/${req.ref}`;
            field = 'source.ref';
            target = `+${ref}:refs/archway/read`;
            what = `ref '${req.ref}'`;
          } else {
            field = 'source.git';
            target = '+HEAD:refs/archway/read';
            what = 'HEAD';
          }
          // The commit with its trees only, where the server allows blob filters.
          const fetchArgs = ['--no-tags', '--no-write-fetch-head', '--depth=1', '--filter=blob:none'];
          await fetch(['fetch', '--quiet', ...fetchArgs, pin.url, target], field, what);
          const sha = await local(['rev-parse', '--verify', 'refs/archway/read^{commit}'], 'git rev-parse');
          for (const path of req.files) {
            const entry = await local(['ls-tree', '-z', sha, '--', path], 'git ls-tree');
            const m = /^(\d{6}) (\w+) ([0-9a-f]{40,64})\t/.exec(entry);
            if (!m) continue;
            const [, mode, type, oid] = m as unknown as [string, string, string, string];
            if (type !== 'blob' || mode === '120000')
              throw new InvalidInputError(
                'config',
                `${path} at ${sha} is ${mode === '120000' ? 'a symlink' : `a ${type}`}, not a file`,
              );
            const have = await local(['cat-file', '-e', oid], 'git cat-file').then(
              () => true,
              () => false,
            );
            // The one blob, fetched by git itself from the partial clone's remote (the pinned URL).
            if (!have) await fetch(['cat-file', '-e', oid], 'source.git', `the blob of ${path}`);
            const size = Number(await local(['cat-file', '-s', oid], 'git cat-file'));
            if (size > o.maxFileBytes)
              throw new InvalidInputError(
                'config',
                `${path} at ${sha} is ${size} bytes: at most ${o.maxFileBytes} are read`,
              );
            const text = await local(['cat-file', 'blob', oid], 'git cat-file');
            log.debug({ url: src.url.href, sha, path }, 'config read from the git source');
            return { found: true as const, sha, path, text };
          }
          return { found: false as const, sha };
        } finally {
          await rm(dir, { recursive: true, force: true }).catch((e: unknown) =>
            log.warn({ dir, err: toError(e).message }, 'removing a config read left files'),
          );
        }
      }),
  };
}

/** Whether a pack file under the repository reached the size limit (prlimit stopped git at it). */
async function reachedLimit(repo: string, limit: number): Promise<boolean> {
  const packs = join(repo, 'objects', 'pack');
  for (const name of await readdir(packs).catch(() => [] as string[])) {
    const st = await stat(join(packs, name)).catch(() => undefined);
    if (st && st.size >= limit) return true;
  }
  return false;
}

/** git's own reason (its `fatal:` line), without the command's framing. */
function gitReason(message: string): string {
  // HostCommandError: `git fetch failed (exit 128): <the last lines of stderr, joined by ' | '>`.
  const stderr = message.replace(/^[^:]*failed( \(exit \d+\))?: /, '');
  const lines = stderr.split(/\n| \| /).map((l) => l.trim());
  const fatal = lines.find((l) => /^(fatal|error):/.test(l)) ?? lines.find(Boolean) ?? '';
  return fatal.replace(/^(fatal|error):\s*/, '').slice(0, 300);
}
