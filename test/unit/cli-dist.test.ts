import { readFile, readlink, stat, utimes, writeFile } from 'node:fs/promises';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';

const ROOT = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');
const STAMP = `${ROOT}/dist/current/build.json`;
const archway = (args: string[]) =>
  execa(`${ROOT}/bin/archway`, args, {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    extendEnv: false,
    reject: false,
  });

// What a test spawns must be the checkout's code, never a stale dist/ (issue #13).
describe('bin/archway runs the compiled checkout', { timeout: 60_000 }, () => {
  it('compiles again when a source file is newer than the build', async () => {
    expect((await archway(['--version'])).exitCode).toBe(0);
    const before = await readlink(`${ROOT}/dist/current`);
    await utimes(STAMP, new Date(0), new Date(0));
    const r = await archway(['--version']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^\d+\.\d+\.\d+$/);
    expect(await readlink(`${ROOT}/dist/current`)).not.toBe(before);
    expect((await stat(STAMP)).mtimeMs).toBeGreaterThan(Date.now() - 60_000);
  });

  it('compiles again when the build was made for another checkout', async () => {
    expect((await archway(['--version'])).exitCode).toBe(0);
    const stamp = JSON.parse(await readFile(STAMP, 'utf8')) as { root: string };
    const before = await readlink(`${ROOT}/dist/current`);
    const { mtime } = await stat(STAMP);
    await writeFile(STAMP, JSON.stringify({ ...stamp, root: '/elsewhere/archway' }));
    await utimes(STAMP, mtime, mtime);
    expect((await archway(['--version'])).exitCode).toBe(0);
    expect(await readlink(`${ROOT}/dist/current`)).not.toBe(before);
    expect(JSON.parse(await readFile(STAMP, 'utf8'))).toMatchObject({ root: ROOT });
  });

  it('does not compile when nothing changed', async () => {
    expect((await archway(['--version'])).exitCode).toBe(0);
    const before = await readlink(`${ROOT}/dist/current`);
    expect((await archway(['--version'])).exitCode).toBe(0);
    expect(await readlink(`${ROOT}/dist/current`)).toBe(before);
  });
});
