import { lstat, stat } from 'node:fs/promises';

/**
 * Whether there is something at `path`. A symlink is followed (a dangling one is not there)
 * unless `noFollow`: then the link itself counts, which is what a check before writing in a
 * directory a job controls needs.
 */
export async function exists(path: string, o: { noFollow?: boolean } = {}): Promise<boolean> {
  return (o.noFollow ? lstat : stat)(path).then(
    () => true,
    () => false,
  );
}
