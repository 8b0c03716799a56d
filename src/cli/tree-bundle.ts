import { lstat, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HostCommandError, runCommand } from '../core/index.ts';

const GIT_ENV = {
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  HOME: '/nonexistent',
  GIT_TERMINAL_PROMPT: '0',
  GIT_AUTHOR_NAME: 'archway',
  GIT_AUTHOR_EMAIL: 'archway@localhost',
  GIT_COMMITTER_NAME: 'archway',
  GIT_COMMITTER_EMAIL: 'archway@localhost',
};

/** What `archway build` sends: a git bundle of one commit of the tree, and what it holds. */
export interface TreeBundle {
  bundle: Buffer;
  files: number;
  /** The branch of the git repository the directory is in, when it is in one. */
  branch?: string | undefined;
  /** True when the files came from a git repository (tracked + untracked not ignored). */
  git: boolean;
}

/**
 * The working tree of `dir` as a git bundle of one commit at `refs/heads/main`, made in a
 * scratch repository (the user's repository is only read). In a git work tree: the tracked files
 * and the untracked ones `.gitignore` does not exclude, as they are on disk now (uncommitted
 * changes included, deleted files left out); elsewhere every file under `dir`. Symlinks are kept
 * as symlinks, never followed.
 */
export async function makeTreeBundle(dir: string): Promise<TreeBundle> {
  const scratch = await mkdtemp(join(tmpdir(), 'archway-build-'));
  const repo = join(scratch, 'repo.git');
  const env = { ...GIT_ENV, GIT_INDEX_FILE: join(scratch, 'index') };
  const git = (args: string[], input?: string) =>
    runCommand('git', args, {
      env,
      timeoutMs: 300_000,
      label: `git ${args[0]}`,
      ...(input !== undefined ? { input } : {}),
    });
  try {
    await git(['init', '--bare', '--quiet', repo]);
    const inRepo = await runCommand('git', ['-C', dir, 'rev-parse', '--is-inside-work-tree'], {
      env: GIT_ENV,
    }).then(
      (o) => o.trim() === 'true',
      () => false,
    );
    let branch: string | undefined;
    const base = ['--git-dir', repo, '--work-tree', dir];
    if (inRepo) {
      const listed = (
        await runCommand('git', ['-C', dir, 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
          env: GIT_ENV,
        })
      )
        .split('\0')
        .filter(Boolean);
      const present: string[] = [];
      for (const p of [...new Set(listed)])
        if (
          await lstat(join(dir, p)).then(
            () => true,
            () => false,
          )
        )
          present.push(p);
      if (present.length > 0)
        await git(
          [...base, 'add', '-f', '--pathspec-from-file=-', '--pathspec-file-nul'],
          `${present.join('\0')}\0`,
        );
      branch = await runCommand('git', ['-C', dir, 'symbolic-ref', '--quiet', '--short', 'HEAD'], {
        env: GIT_ENV,
      })
        .then((o) => o.trim() || undefined)
        .catch(() => undefined);
    } else {
      await git([...base, 'add', '-A', '.']);
    }
    const tree = (await git(['--git-dir', repo, 'write-tree'])).trim();
    const files = (await git([...base, 'ls-files', '--cached'])).split('\n').filter(Boolean).length;
    const commit = (
      await git(['--git-dir', repo, 'commit-tree', tree, '-m', `archway build of ${dir}`])
    ).trim();
    await git(['--git-dir', repo, 'update-ref', 'refs/heads/main', commit]);
    const out = join(scratch, 'tree.bundle');
    await git(['--git-dir', repo, 'bundle', 'create', '--quiet', out, 'refs/heads/main']);
    return { bundle: await readFile(out), files, branch, git: inRepo };
  } catch (e) {
    if (e instanceof HostCommandError) throw new Error(`packing ${dir}: ${e.message}`);
    throw e;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
